"""Running ffmpeg/ffprobe: no shell, no stdin, a wall-clock limit, stderr kept for errors."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence

from vidpipe.media.errors import ToolFailedError, ToolKilledError, ToolMissingError, ToolTimeoutError

STDERR_TAIL_LINES = 12
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child: be killed when the process that started us dies (kill -9 included).

    ffmpeg runs in its own session so a timeout can kill its whole group; without this it
    would outlive a killed worker and keep burning CPU on output nobody will publish.
    """
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    on_stdout_line: Callable[[str], None] | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    subject: str | None = None,
) -> bytes:
    """Run ``argv`` and return its stdout (empty when ``on_stdout_line`` consumes it).

    ``on_stderr_line`` sees every line of stderr, also when the tool succeeds (warnings).

    The process runs in its own process group so a timeout (or our own interruption)
    kills ffmpeg together with anything it started.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            # Only a prctl call between fork and exec: none of the locks preexec_fn can deadlock on.
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
    except FileNotFoundError as exc:
        raise ToolMissingError(f"{argv[0]} is not installed (looked for {argv[0]!r})", path=subject) from exc

    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    stdout_chunks: list[bytes] = []

    assert proc.stdout is not None and proc.stderr is not None  # both are pipes
    stdout, stderr = proc.stdout, proc.stderr

    def pump_stderr() -> None:
        for raw in stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                stderr_tail.append(line)
                if on_stderr_line is not None:
                    on_stderr_line(line)

    def pump_stdout() -> None:
        for raw in stdout:
            if on_stdout_line is None:
                stdout_chunks.append(raw)
            else:
                on_stdout_line(raw.decode("utf-8", errors="replace").rstrip())

    pumps = [threading.Thread(target=pump_stderr, daemon=True), threading.Thread(target=pump_stdout, daemon=True)]
    for pump in pumps:
        pump.start()
    tool = os.path.basename(argv[0])
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ToolTimeoutError(
            f"{tool} took longer than {timeout:g} s and was stopped", path=subject, stderr_tail=stderr_tail
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=5)
    if returncode < 0:
        raise ToolKilledError(f"{tool} was killed by signal {-returncode}", path=subject, stderr_tail=stderr_tail)
    if returncode != 0:
        raise ToolFailedError(plain_failure(tool, stderr_tail, returncode), path=subject, stderr_tail=stderr_tail)
    return b"".join(stdout_chunks)


# What ffmpeg's last words mean, for people; the words themselves stay in ``stderr_tail``.
KNOWN_FAILURES = (
    ("Cannot allocate memory", "ran out of memory"),
    ("Decoder (codec", "found a stream it has no decoder for"),
    ("moov atom not found", "found no MP4 index (moov box): the file is incomplete"),
    ("Invalid data found when processing input", "found data it cannot read in the file"),
    ("Permission denied", "was not allowed to open a file"),
)


def plain_failure(tool: str, stderr_tail: Sequence[str], returncode: int) -> str:
    """One line for people about a failed run of ``tool``: never a raw stderr line or a memory address."""
    text = "\n".join(stderr_tail)
    for marker, words in KNOWN_FAILURES:
        if marker in text:
            return f"{tool} {words}"
    return f"{tool} stopped with an error (exit status {returncode}); its last messages are in the details"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
