"""Urgent work marks and tool priorities (``vidpipe/media/priority.py``)."""

import multiprocessing
import os
import signal
from pathlib import Path

from vidpipe.media.priority import urgent, urgent_work_running


def test_urgent_work_is_seen_while_its_block_runs_and_not_after(tmp_path: Path):
    assert not urgent_work_running(tmp_path / "never made")
    with urgent(tmp_path):
        assert urgent_work_running(tmp_path)
        with urgent(tmp_path):  # two at once: one ending leaves the other seen
            pass
        assert urgent_work_running(tmp_path)
    assert not urgent_work_running(tmp_path)
    assert list(tmp_path.iterdir()) == []


def _hold_urgent(folder: Path, ready) -> None:
    with urgent(folder):
        ready.set()
        signal.pause()


def test_the_mark_of_a_killed_process_does_not_count_and_is_removed(tmp_path: Path):
    ready = multiprocessing.Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold_urgent, args=(tmp_path, ready))
    holder.start()
    assert ready.wait(10)
    assert urgent_work_running(tmp_path)  # held by another process
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    assert [path.name.split("-")[0] for path in tmp_path.iterdir()] == [str(holder.pid)]  # left behind
    assert not urgent_work_running(tmp_path)
    assert list(tmp_path.iterdir()) == []
