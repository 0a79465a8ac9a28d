"""The daemon process's entry point: ``python -m peerlight.node``.

The CLI's ``peerlight start`` replaces itself with this (foreground) or spawns it
(``--detach``), so the CLI process itself never imports the daemon's dependencies. With
``--ready-fd`` the daemon reports ``ready`` or ``error: <reason>`` on that pipe once start-up
has succeeded or failed, which is how a detaching CLI knows what happened.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio

from .catalog import CatalogError, SchemaVersionError
from .config import ConfigError, load_config
from .identity import IdentityError, load_identity
from .lock import AlreadyRunning, DaemonLock
from .logs import configure_logging
from .paths import NodePaths

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

log = logging.getLogger("peerlight.daemon")


class _ReadyPipe:
    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def send(self, message: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, message.encode() + b"\n")
            os.close(self._fd)
        except OSError:
            pass  # the starter went away; nothing to tell
        self._fd = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m peerlight.node", description="Run the Peerlight node daemon.")
    parser.add_argument("--data-dir", help="node data directory (default: $PEERLIGHT_HOME or the platform's)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override daemon.log_level")
    parser.add_argument("--ready-fd", type=int, help="pipe to report 'ready' or 'error: …' on (used by --detach)")
    parser.add_argument("--no-console-log", action="store_true", help="log only to the log file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ready = _ReadyPipe(args.ready_fd)

    def fail(message: str, code: int) -> int:
        print(f"peerlight: {message}", file=sys.stderr)
        ready.send(f"error: {message}")
        return code

    paths = NodePaths.resolve(args.data_dir)
    if not paths.is_initialised():
        return fail(f"no node in {paths.root} (run `peerlight init`)", EXIT_CONFIG)
    try:
        config = load_config(paths.config, paths.root)
        identity = load_identity(paths.identity)
    except (ConfigError, IdentityError) as exc:
        return fail(str(exc), EXIT_CONFIG)
    configure_logging(
        args.log_level or config.daemon.log_level,
        config.resolve_path(paths.root, config.daemon.log_file),
        max_bytes=config.daemon.log_max_bytes,
        backups=config.daemon.log_backups,
        to_stderr=not args.no_console_log,
    )
    try:
        lock = DaemonLock.acquire(paths)
    except AlreadyRunning as exc:
        return fail(str(exc), EXIT_FAILURE)
    try:
        from .daemon import Daemon  # after the lock: a refused second daemon stays cheap

        daemon = Daemon(paths, config, identity)
        trio.run(daemon.run, lambda: ready.send("ready"))
    except (CatalogError, SchemaVersionError, OSError) as exc:
        log.error("daemon failed: %s", exc)
        return fail(str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        pass  # a signal that arrived before the signal handlers were installed
    except Exception as exc:
        log.exception("daemon crashed")
        return fail(f"daemon crashed: {exc!r}", EXIT_FAILURE)
    finally:
        lock.release()
    return EXIT_OK
