"""``WorkerWatch`` against a real Redis and real Celery workers: a killed worker's step fails instead of
being waited for forever; a busy worker that answers keeps its step. (``test_cluster.py`` kills a worker of
the whole cluster mid-encode.)"""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from celery.exceptions import WorkerLostError

from vidpipe.defs.executor import WorkerWatch
from vidpipe.loopback import start_redis
from vidpipe_tests.harness import REPO_ROOT, wait_until


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("redis")
    redis = start_redis(folder, log=folder / "redis.log")
    try:
        yield redis.url
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def napping(broker):
    os.environ["VIDPIPE_CELERY_BROKER"] = broker
    try:
        from vidpipe_tests.defs import napping_worker

        yield napping_worker
    finally:
        del os.environ["VIDPIPE_CELERY_BROKER"]


def start_worker(broker: str, name: str, tmp_path) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (the worker writes it until it stops)
    argv = [sys.executable, "-m", "celery", "-A", "vidpipe_tests.defs.napping_worker", "worker"]
    return subprocess.Popen(
        [*argv, "-n", f"{name}@test", "--concurrency", "1", "--without-gossip", "--without-mingle"],
        env={**os.environ, "VIDPIPE_CELERY_BROKER": broker},
        cwd=REPO_ROOT,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


@contextmanager
def started_nap(broker: str, napping, tmp_path, worker: str, seconds: float, lost_after: float):
    """A real worker ``worker`` napping ``seconds`` in a task watched as step ``renditions``: (worker process,
    the task's result, the watch), once the task has started; the worker is killed afterwards."""
    process = start_worker(broker, worker, tmp_path)
    try:
        result = napping.nap.delay(seconds)
        watch = WorkerWatch(napping.app, lost_after=lost_after)
        watch.watch("renditions", result.id)
        wait_until(lambda: result.state == "STARTED", 60, "the worker to start the task")
        yield process, result, watch
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_a_step_whose_worker_is_killed_fails_instead_of_waiting_forever(broker, napping, tmp_path):
    with started_nap(broker, napping, tmp_path, "doomed", seconds=60, lost_after=2) as (worker, result, watch):
        assert result.info["hostname"] == "doomed@test"
        assert watch.check() == []  # it answers

        os.killpg(worker.pid, signal.SIGKILL)  # the worker, its pool process: the machine is gone
        worker.wait()
        assert watch.check() == []  # one unanswered ping is not yet a lost worker
        time.sleep(2)
        assert watch.check() == ["renditions"]
        assert result.ready()
        with pytest.raises(
            WorkerLostError, match=r"Celery worker doomed@test stopped answering while it ran step renditions"
        ):
            result.get(timeout=5)
        assert watch.check() == []  # failed once; nothing left to watch


def test_a_busy_worker_that_answers_keeps_its_step(broker, napping, tmp_path):
    with started_nap(broker, napping, tmp_path, "busy", seconds=5, lost_after=1) as (_worker, result, watch):
        rounds = 0
        while not result.ready():
            assert watch.check() == []
            rounds += 1
            time.sleep(1)
        assert rounds >= 2
        assert result.get(timeout=5) == 5
