"""Running ffmpeg and ffprobe (``media/ffmpeg_calls.py``): what a missing binary says, and that a tool
never outlives the process that started it."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vidpipe.media.errors import ToolKilledError, ToolMissingError, ToolTimeoutError
from vidpipe.media.ffmpeg_calls import run_tool
from vidpipe.media.priority import CpuPriority


def test_a_missing_binary_is_named(tmp_path):
    missing = str(tmp_path / "ffmpeg")
    with pytest.raises(ToolMissingError) as err:
        run_tool([missing, "-version"], timeout=10, subject="clip.mp4")
    assert err.value.message == f"{missing} is not installed (looked for {missing!r})"
    assert err.value.path == "clip.mp4"


STARTER = """
import sys
from vidpipe.media.ffmpeg_calls import run_tool
run_tool(["sleep", sys.argv[1]], timeout=120)
"""


def test_a_tool_dies_with_the_process_that_started_it_even_on_kill_9():
    marker = "97.25"  # a sleep no other process runs
    starter = subprocess.Popen([sys.executable, "-c", STARTER, marker])
    deadline = time.monotonic() + 30
    while not (sleeping := _sleeps(marker)):
        assert time.monotonic() < deadline and starter.poll() is None, "the tool never started"
        time.sleep(0.05)
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    deadline = time.monotonic() + 5
    while _sleeps(marker):
        assert time.monotonic() < deadline, f"the tool {sleeping} outlived its starter"
        time.sleep(0.05)


def _sleeps(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if status != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_the_tool_runs_in_a_session_of_its_own():
    out = run_tool([sys.executable, "-c", "import os; print(os.getsid(0) == os.getpid())"], timeout=30)
    assert out.strip() == b"True" and os.getsid(0) != os.getpid()


def test_a_stopped_tool_is_killed_with_everything_it_started():
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ToolKilledError) as err:
        run_tool(["sh", "-c", "sleep 30 & sleep 30"], timeout=60, stop=stop)
    assert time.monotonic() - started < 5
    assert err.value.message == "sh was stopped: its work is no longer wanted"


def test_a_tool_that_ends_before_a_stop_runs_to_its_end_and_its_timeout_still_holds():
    assert run_tool(["echo", "done"], timeout=10, stop=threading.Event()) == b"done\n"
    with pytest.raises(ToolTimeoutError):
        run_tool(["sleep", "30"], timeout=0.5, stop=threading.Event())


def test_a_tool_runs_at_the_priority_asked_for_and_so_does_its_session_until_it_is_changed():
    assert run_tool(["nice"], timeout=10) == f"{os.nice(0)}\n".encode()
    assert run_tool(["nice"], timeout=10, priority=CpuPriority(7)) == f"{os.nice(0) + 7}\n".encode()
    # (The tool reads its niceness and its session's once run_tool has set them, and again once the test has.)
    report = "nice; cat /proc/self/autogroup 2>/dev/null || echo no autogroups"
    read = ["sh", "-c", f"sleep 0.5; {report}; sleep 1.5; {report}"]
    priority = CpuPriority(7)
    changed = threading.Timer(1.0, priority.set, args=(0,))
    changed.start()
    before_nice, before_group, after_nice, after_group = (
        run_tool(read, timeout=10, priority=priority).decode().splitlines()
    )
    changed.join()
    assert int(before_nice) == os.nice(0) + 7
    if os.geteuid() == 0:  # lowering a thread's nice value again needs CAP_SYS_NICE
        assert int(after_nice) == os.nice(0)
    if Path("/proc/self/autogroup").exists():  # the kernel schedules sessions as groups (Debian's default)
        assert before_group.endswith(" nice 7") and after_group.endswith(" nice 0")
