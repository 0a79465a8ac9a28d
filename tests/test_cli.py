"""CLI conventions that need no daemon: global options anywhere, exit codes, JSON errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .helpers import PEERLIGHT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PEERLIGHT), *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    "words",
    [
        ["--json", "--data-dir", "{dir}", "status"],
        ["status", "--json", "--data-dir", "{dir}"],
        ["--data-dir", "{dir}", "models", "--json", "train-adapter", "--encoder", "text"],
        ["models", "--data-dir", "{dir}", "train-adapter", "--encoder", "text", "--json"],
        ["library", "--data-dir", "{dir}", "list", "--json"],
        ["--log-level", "debug", "library", "list", "--data-dir", "{dir}", "--json"],
    ],
)
def test_global_options_work_before_or_after_any_subcommand(tmp_path: Path, words: list[str]) -> None:
    data_dir = tmp_path / "node"
    proc = run(*(w.format(dir=data_dir) for w in words))
    # The command reached the node named by --data-dir (not the default one) and answered in JSON.
    assert proc.returncode == 3, proc.stderr
    reply = json.loads(proc.stdout)
    assert str(data_dir) in json.dumps(reply)


def test_usage_errors_exit_2_and_are_json_under_json() -> None:
    proc = run("--json", "search")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "usage" and "query" in error["message"]
    proc = run("no-such-command", "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["code"] == "usage"
    proc = run("rate", "/x", "not-a-number")
    assert proc.returncode == 2 and "invalid float value" in proc.stderr and not proc.stdout
