"""What Linux's process table (``/proc``) says about processes: start times and descendants."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (state, ppid, ...); None once the process is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2, the command name in parentheses, may itself hold spaces and parentheses.
    return stat[stat.rindex(")") + 2 :].split()


def boot_time() -> float:
    """When the machine booted, in seconds since the epoch (``btime`` in ``/proc/stat``, whole seconds)."""
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line")


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch; None if no live process has that pid."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):  # gone, or exited and not yet reaped by its parent
        return None
    return boot_time() + int(fields[22 - 3]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time process ``pid`` has used, with that of the children it has reaped; 0 once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return sum(int(field) for field in fields[14 - 3 : 18 - 3]) / os.sysconf("SC_CLK_TCK")  # utime … cstime


def descendants(root: int) -> list[int]:
    """Every process below ``root`` in the process tree, parents before their children."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    parents = [root]
    while parents:
        below = [pid for parent in parents for pid in children.get(parent, [])]
        found += below
        parents = below
    return found
