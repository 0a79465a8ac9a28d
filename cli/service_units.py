"""The files that make the OS start the daemon with the user's session: a systemd user unit, a launchd agent.

Both run ``python -m peerlight.node --data-dir <node>`` with the interpreter the CLI runs
under (the virtual environment's), so the service uses the same install as the command
line. Pure functions: what is written, and where, is decided here and tested without a
service manager.

systemd: ``Type=notify``, so ``systemctl --user start`` returns when the daemon serves
(``node/service_notify.py`` sends ``READY=1``), and ``WatchdogSec=`` restarts a daemon whose
event loop or catalog stopped answering; ``Restart=on-failure`` restarts one that crashed,
never one stopped on purpose. ``WantedBy=default.target`` starts it at login; with lingering
(``loginctl enable-linger``) it starts at boot and survives logout.

launchd: ``RunAtLoad`` starts it at login; ``KeepAlive`` with ``SuccessfulExit = false``
restarts it when it exits with an error. launchd has no readiness or watchdog protocol.
"""

from __future__ import annotations

import hashlib
import plistlib
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAME = "peerlight"
WATCHDOG_SECONDS = 60  # the daemon pings every 30 s; a loop stalled a minute is restarted
START_SECONDS = 600  # a cold start may load models for minutes on a slow machine
STOP_SECONDS = 90  # the daemon's shutdown grace (30 s by default) and its catalog's close


class UnitError(Exception):
    """A unit that cannot be written faithfully (a path systemd could not carry)."""


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: this interpreter, the daemon module and one node's data directory."""

    data_dir: Path
    python: Path = Path(sys.executable)
    default_node: bool = True  # the platform's default data directory: the plain name

    @property
    def name(self) -> str:
        """``peerlight``, or ``peerlight-<hash>`` for another node's directory (two nodes, two units)."""
        if self.default_node:
            return DEFAULT_NAME
        return f"{DEFAULT_NAME}-{hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:8]}"

    @property
    def command(self) -> list[str]:
        return [str(self.python), "-m", "peerlight.node", "--data-dir", str(self.data_dir)]


def systemd_unit_path(spec: ServiceSpec, config_home: Path) -> Path:
    return config_home / "systemd" / "user" / f"{spec.name}.service"


def systemd_unit(spec: ServiceSpec) -> str:
    """The user unit's text."""
    exec_start = " ".join(_systemd_word(word) for word in spec.command)
    return f"""# Written by `peerlight service install`; `peerlight service uninstall` removes it.
[Unit]
Description=Peerlight node daemon ({_systemd_escape(str(spec.data_dir))})

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
Restart=on-failure
RestartSec=5s
WatchdogSec={WATCHDOG_SECONDS}s
TimeoutStartSec={START_SECONDS}s
TimeoutStopSec={STOP_SECONDS}s
UMask=0077
NoNewPrivileges=yes
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=default.target
"""


def launchd_label(spec: ServiceSpec) -> str:
    return "org.peerlight." + ("node" if spec.default_node else spec.name.removeprefix(f"{DEFAULT_NAME}-"))


def launchd_plist_path(spec: ServiceSpec, home: Path) -> Path:
    return home / "Library" / "LaunchAgents" / f"{launchd_label(spec)}.plist"


def launchd_plist(spec: ServiceSpec, log_dir: Path) -> bytes:
    """The launch agent's property list (XML)."""
    return plistlib.dumps(
        {
            "Label": launchd_label(spec),
            "ProgramArguments": spec.command,
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ProcessType": "Background",
            "Umask": 0o077,
            "ThrottleInterval": 5,
            "ExitTimeOut": STOP_SECONDS,
            "StandardOutPath": str(log_dir / "launchd.out"),
            "StandardErrorPath": str(log_dir / "launchd.out"),
        }
    )


def _systemd_escape(text: str) -> str:
    """Specifiers (``%``) and variables (``$``) taken literally."""
    if any(c in text for c in "\n\r\0"):
        raise UnitError(f"a path with a line break or NUL cannot go into a unit file: {text!r}")
    return text.replace("%", "%%").replace("$", "$$")


def _systemd_word(word: str) -> str:
    """One ExecStart argument, double-quoted with C-style escapes, whatever it contains."""
    quoted = word.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{_systemd_escape(quoted)}"'
