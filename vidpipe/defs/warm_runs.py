"""Run workers forked from a warm process, instead of a new Python each.

Dagster's ``DefaultRunLauncher`` asks the code server to start each run, and the code server
spawns a new interpreter that imports Dagster and vidpipe, opens the instance and builds the
job: ~1.5 s of a small upload's drop-to-playable and ~2 s of CPU per run on 2 cores, before the
run's first step. ``WarmRunWorkers`` keeps a ``forkserver`` (Python's ``multiprocessing``) that
has done all that once (``PRELOAD``: Dagster's run execution, and ``step_preload``, which
imports the instance's classes and builds the job); each run's worker
forks from it and executes the run as ``dagster api execute_run`` does.

The forkserver holds the code as it was when it started. A run launched after a file of the
``vidpipe`` package changed (``code_fingerprint``) is launched the usual way, by the code
server, which ``Reload`` in the UI refreshes; so is every run until the daemon restarts.

What this relies on (from ``dagster_internals``, guarded by ``test_warm_runs.py``):
``execute_run_command_body`` (the body of ``dagster api execute_run``: logs the worker's pid,
executes the run, reports a failure), ``capture_interrupts`` (a SIGINT, which ``terminate`` sends,
interrupts the run as Dagster's own termination does), and ``InstanceRef`` (the instance the
worker opens).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.process
import threading
from pathlib import Path

import dagster as dg

import vidpipe
from vidpipe.defs.dagster_internals import InstanceRef

PRELOAD = ["dagster._cli.api", "vidpipe.defs.step_preload"]
"""What the warm process imports before any run forks from it: the module of ``execute_run_command_body``
(imported only there), the instance's classes and the built job."""
WORKER_TAG = "vidpipe/run_worker"
"""On a run whose worker forked from the warm process, ``"warm"``: the launcher terminates it by its pid."""
WARM = "warm"
PACKAGE = Path(vidpipe.__file__).resolve().parent


def code_fingerprint(package: Path = PACKAGE) -> frozenset[tuple[str, int, int]]:
    """Every Python file of ``package`` with its modification time and size (~2 ms for vidpipe's ~80 files)."""
    return frozenset((str(path), (st := path.stat()).st_mtime_ns, st.st_size) for path in package.rglob("*.py"))


class WarmRunWorkers:
    """The warm process run workers fork from (``warm_up``, in the background of the first launch), and whether it
    still holds the code the ``vidpipe`` package has now."""

    def __init__(self, package: Path = PACKAGE):
        self._package = package
        self._code = code_fingerprint(package)
        self._context = multiprocessing.get_context("forkserver")
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._workers: list[multiprocessing.process.BaseProcess] = []
        atexit.register(self.stop)

    def warm_up(self) -> None:
        """Start the warm process (~2 s of imports on 2 cores, in a process of its own); ``ready`` once it is up."""
        with self._lock:
            self._context.set_forkserver_preload(PRELOAD)
            multiprocessing.forkserver.ensure_running()
        self._ready.set()

    def ready(self) -> bool:
        return self._ready.is_set()

    def current(self) -> bool:
        """Whether the package's files are still those the warm process was made with."""
        return code_fingerprint(self._package) == self._code

    def start(self, run_id: str, instance_ref: InstanceRef) -> int:
        """Fork a worker that executes the run ``run_id`` of the instance ``instance_ref``; its pid."""
        with self._lock:
            multiprocessing.active_children()  # reaps the workers that have ended
            self._workers = [worker for worker in self._workers if worker.is_alive()]
            # Not a daemonic process: those may not start processes of their own (a run with a process per step).
            worker = self._context.Process(
                target=execute_run, args=(run_id, instance_ref), name=f"vidpipe run {run_id}"
            )
            worker.start()
            self._workers.append(worker)
            assert worker.pid is not None  # started
            return worker.pid

    def stop(self) -> None:
        """Kill the workers still running (their ffmpeg dies with them), as the process exits: a stopping daemon
        takes its runs with it and run monitoring re-runs them once it is back, as after a crash
        (``run_launcher``). Otherwise ``multiprocessing`` would hold the daemon's exit until every run ended."""
        with self._lock:
            for worker in self._workers:
                if worker.is_alive():
                    worker.kill()


def execute_run(run_id: str, instance_ref: InstanceRef) -> None:
    """A run worker's whole life, in the process forked for it: ``dagster api execute_run``'s."""
    from vidpipe.defs.dagster_internals import capture_interrupts, execute_run_command_body

    with capture_interrupts(), dg.DagsterInstance.from_ref(instance_ref) as instance:
        execute_run_command_body(run_id, instance, lambda _event: None, set_exit_code_on_failure=False)
