"""The architecture's boundaries, checked on the source and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "p2p", "embeddings", "recommender", "permissions", "cli")

# package -> imports it must never make (directly; the run-time check below covers indirect ones)
FORBIDDEN = {
    "cli": {"torch", "open_clip", "faiss", "peerlight.embeddings"},
    "p2p": {"peerlight.recommender", "peerlight.node", "peerlight.cli", "peerlight.embeddings"},
    "recommender": {"peerlight.p2p"},
    "embeddings": {"peerlight.node", "peerlight.p2p", "peerlight.cli"},
}


def imports_of(package: str) -> set[tuple[str, str]]:
    """(file, imported module) for every import in a package, relative ones made absolute."""
    found = set()
    for file in (REPO / package).rglob("*.py"):
        module_parts = ["peerlight", *file.relative_to(REPO).with_suffix("").parts]
        if module_parts[-1] == "__init__":
            module_parts.pop()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                found |= {(str(file), alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module_parts[: len(module_parts) - node.level + (file.name == "__init__.py")]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                found.add((str(file), name))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_across_its_boundary(package: str) -> None:
    violations = [
        f"{file}: {name}"
        for file, name in imports_of(package)
        for banned in FORBIDDEN[package]
        if name == banned or name.startswith(banned + ".")
    ]
    assert not violations


@pytest.mark.parametrize("package", [p for p in PACKAGES if p != "p2p"])
def test_only_p2p_imports_libp2p(package: str) -> None:
    """libp2p stays behind ``p2p/``: its internals (mDNS, hosts, peer ids) change between
    releases, and one package adapts to them (``p2p/quirks.py``)."""
    found = [f"{file}: {name}" for file, name in imports_of(package) if name.split(".")[0] in ("libp2p", "multiaddr")]
    assert not found


def test_the_wire_schema_is_the_one_place_protocol_ids_are_written() -> None:
    """Every /peerlight/... protocol id in the code comes from ``p2p/schema.py``."""
    written = [
        f"{file}:{n}"
        for package in PACKAGES
        for file in (REPO / package).rglob("*.py")
        if file != REPO / "p2p" / "schema.py"
        for n, line in enumerate(file.read_text().splitlines(), 1)
        if '"/peerlight/' in line
    ]
    assert not written


def test_relative_imports_are_resolved_by_the_checker() -> None:
    assert any(name == "peerlight.node.control.protocol" for _, name in imports_of("node"))


def test_the_cli_loads_no_heavy_modules() -> None:
    code = (
        "import sys, peerlight.cli.main, peerlight.cli.client;"
        "peerlight.cli.main.build_parser();"
        "heavy = {'torch', 'open_clip', 'faiss', 'libp2p', 'trio', 'peerlight.embeddings', 'peerlight.node.daemon'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_nothing_is_installed_as_a_top_level_module() -> None:
    code = f"import importlib.util as u; print([n for n in {list(PACKAGES)!r} if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.strip() == "[]"
    import peerlight.node

    assert Path(peerlight.node.__file__).parent == REPO / "node"
