"""The wheel holds every module: each folder of Python files under a mapped root is a listed package.

An editable install finds unlisted subpackages through the folder mapping, so only a wheel
(pip install ., a distribution's package) would be missing them: caught here instead."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_folder_of_python_files_is_a_listed_package() -> None:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    for package, folder in setup["package-dir"].items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder).parts
            name = ".".join((package, *relative))
            assert name in listed, f"{name} ({init.parent.relative_to(ROOT)}) is not in [tool.setuptools] packages"
