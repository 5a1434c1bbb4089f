"""`obliviate serve` as a child process: the command that runs it, its environment and port, and
the processes it leaves, read from /proc."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("obliviate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBLIVIATE_")}
    env["OBLIVIATE_DATA_DIR"] = str(data_dir)
    env["OBLIVIATE_SWEEP_INTERVAL_SECONDS"] = "1"
    env.update({f"OBLIVIATE_{k}": v for k, v in settings.items()})
    return env


def living(pgid: int) -> list[int]:
    """Processes of a group that still run (zombies waiting for a reaper do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found
