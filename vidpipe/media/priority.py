"""CPU priority of tool runs on one machine: work that makes a video playable goes first.

A tool run that can wait (the rest of a ladder) runs at a lower priority (``CpuPriority``) while urgent work
(``urgent``: a first rung, the playable stream) is in progress anywhere on the machine, and at the usual
priority otherwise: held low to its end, a multi-threaded encode beside the light but frequent wake-ups of
Dagster's processes took ~8 % longer (30 s 1080p, 2 cores, benchmarks/README.md).

Urgent work is marked by a file that its process holds locked in a folder every vidpipe process of the machine
shares (``URGENT_DIR``). A lock dies with its process, so a killed worker leaves no mark that counts.
"""

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

URGENT_DIR = Path(tempfile.gettempdir()) / f"vidpipe-urgent-{os.getuid()}"


@contextlib.contextmanager
def urgent(folder: Path = URGENT_DIR) -> Iterator[None]:
    """Mark, for the block's duration, that urgent work runs on this machine (``urgent_work_running``)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{os.getpid()}-")
    mark = Path(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Locked before it gets a name others look at: a mark under its final name is never unlocked in use.
        mark = mark.rename(mark.with_name(mark.name.removeprefix(".")))
        yield
    finally:
        mark.unlink(missing_ok=True)
        os.close(fd)


def urgent_work_running(folder: Path = URGENT_DIR) -> bool:
    """Whether any process of this machine is inside ``urgent``. Marks left by killed processes are removed."""
    try:
        marks = [path for path in folder.iterdir() if not path.name.startswith(".")]
    except FileNotFoundError:
        return False
    for mark in marks:
        try:
            fd = os.open(mark, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            mark.unlink(missing_ok=True)  # unlocked under its final name: its process is gone
        finally:
            os.close(fd)
    return False


class CpuPriority:
    """The CPU niceness of one tool run (``run_tool``), which may change while the tool runs.

    Where the kernel schedules each session as a group (``sched_autogroup_enabled``, Debian's default), a
    process's nice value counts only against the processes of its own session, and the tool runs in a session
    of its own; its session's autogroup niceness is what weighs against the others' (sched(7)), and every
    process may set that back to 0. The threads' own nice values are set too, for kernels without autogroups;
    lowering them again needs ``CAP_SYS_NICE`` and is skipped where not allowed.
    """

    def __init__(self, niceness: int = 0) -> None:
        self.niceness = niceness
        self._pid: int | None = None
        self._lock = threading.Lock()

    def started(self, pid: int) -> None:
        """The tool runs as ``pid``, already at ``niceness`` itself (``nice``): give its session the same."""
        with self._lock:
            self._pid = pid
            if self.niceness:
                _set_autogroup(pid, self.niceness)

    def set(self, niceness: int) -> None:
        """Run the tool at ``niceness`` from now on (every thread of it, and its session)."""
        with self._lock:
            if niceness == self.niceness:
                return
            self.niceness = niceness
            if self._pid is None:
                return
            _set_autogroup(self._pid, niceness)
            with contextlib.suppress(OSError):
                for thread in os.listdir(f"/proc/{self._pid}/task"):
                    with contextlib.suppress(OSError):  # not allowed (needs CAP_SYS_NICE), or just ended
                        os.setpriority(os.PRIO_PROCESS, int(thread), niceness)


def _set_autogroup(pid: int, niceness: int) -> None:
    """Give the session of ``pid`` the niceness ``niceness``, where the kernel has autogroups (no file otherwise)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(niceness))
