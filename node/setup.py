"""Creating a node: the data directory, its config file and its identity key."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .config import render_default_config
from .files import write_atomic
from .identity import NodeIdentity, create_identity, load_identity
from .paths import NodePaths


class InitError(Exception):
    """The data directory cannot be initialised as asked."""


@dataclass(frozen=True)
class InitResult:
    paths: NodePaths
    identity: NodeIdentity
    created: bool


def init_node(paths: NodePaths, *, if_missing: bool = False) -> InitResult:
    """Create what a node needs in ``paths.root``; an existing node is an error unless ``if_missing``."""
    if paths.is_initialised():
        if not if_missing:
            raise InitError(f"{paths.root} already holds a node (use --if-missing to accept that)")
        return InitResult(paths, load_identity(paths.identity), created=False)
    if paths.root.exists() and not paths.root.is_dir():
        raise InitError(f"{paths.root} exists and is not a directory")
    if not paths.identity.exists() and paths.catalog.exists():
        raise InitError(
            f"{paths.identity} is missing but {paths.catalog} exists: restore the key from a backup "
            "(a new key would give this node a different peer ID)"
        )
    try:
        paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(paths.root, 0o700)
        if not paths.config.exists():
            write_atomic(paths.config, render_default_config().encode("utf-8"))
        identity = (
            load_identity(paths.identity) if paths.identity.exists() else create_identity(paths.identity)
        )
    except OSError as exc:
        raise InitError(f"cannot initialise {paths.root}: {exc}") from None
    return InitResult(paths, identity, created=True)
