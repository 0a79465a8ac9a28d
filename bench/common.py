"""Shared helpers for the benchmarks: each prints one JSON line of figures."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from typing import Any


def emit(name: str, **figures: Any) -> None:
    figures = {"bench": name, **figures, "cpus": os.cpu_count(), "python": platform.python_version()}
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)
