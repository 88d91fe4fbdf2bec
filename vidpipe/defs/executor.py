"""How a run executes its steps: a process per step, or all in the run's own process; or, on a
cluster, each step on a Celery worker."""

import logging
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from celery import Celery, states
from celery.exceptions import DuplicateTaskNameWarning, WorkerLostError
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app

from vidpipe import settings
from vidpipe.defs.dagster_internals import RetryMode, submit_celery_step

# Step processes fork from a server that has already imported vidpipe, Dagster and the
# instance's storage classes: a step starts in ~0.2 s instead of 2.5-4 s on 2 cores.
PROCESS_PER_STEP = {
    "multiprocess": {
        "start_method": {"forkserver": {"preload_modules": ["vidpipe.definitions", "vidpipe.defs.step_preload"]}}
    }
}
ONE_PROCESS: dict[str, dict[str, object]] = {"in_process": {}}


def _choose(config: dict) -> dict:
    return ONE_PROCESS if config["in_one_process"] else PROCESS_PER_STEP


step_executor = dg.multi_or_in_process_executor.configured(
    _choose,
    name="vidpipe_executor",
    config_schema={
        "in_one_process": dg.Field(
            bool,
            default_value=True,
            description="Run every step in the run's own process, one after another (the default: a "
            "video's steps follow one another, so step processes would only add their start, ~3 s of a run "
            "on 2 cores). False gives each step a process of its own, forked from a preloaded forkserver: "
            "a step that crashes its process leaves the run's process standing.",
        )
    },
)


ENCODE_QUEUE = "encode"
"""The Celery queue of the encode step (``QUEUE_TAG`` on the renditions op); every other step goes to
``dagster``, dagster-celery's default. A worker started with ``-q encode`` alone is an encode machine."""
QUEUE_TAG = "dagster-celery/queue"


CELERY_APP_SETTINGS = {
    # A step's task result says STARTED and on which worker, so that a lost worker can be noticed.
    "task_track_started": True,
    # A worker takes a task only when it can start it: no step waits behind a long encode on a busy
    # worker, or is lost with it (the Redis broker would hand it out again only after an hour).
    "worker_disable_prefetch": True,
}
LOST_AFTER_SECONDS = 20.0
"""How long a worker running a step may leave pings unanswered before the step counts as lost."""
WATCH_EVERY_SECONDS = 5.0
PING_SECONDS = 3.0


def celery_app_config(broker: str) -> dict:
    """The Celery settings shared by a run (which sends steps) and the workers (which run them): ``broker``
    (a Redis URL) is also the result backend."""
    return {"broker": broker, "backend": broker, "config_source": dict(CELERY_APP_SETTINGS)}


class WorkerWatch:
    """Fails the Celery task of a step whose worker stopped answering: its machine was lost or the worker
    killed. dagster-celery's executor would wait for that task forever (nothing is left to report on it,
    and the broker does not hand a started task out again); failed, it fails the run, and run retries
    (``dagster.yaml``) re-run the step on a worker that answers. A worker that is only slow to answer is
    told to drop the task, so that the step does not run twice at once."""

    def __init__(self, app: Celery, lost_after: float = LOST_AFTER_SECONDS) -> None:
        self._app = app
        self._lost_after = lost_after
        self._steps: dict[str, str] = {}
        """Task id → step key, for the tasks not yet finished."""
        self._silent_since: dict[str, float] = {}
        """Worker → when it first left a ping unanswered, while it runs a step."""
        self._lock = threading.Lock()

    def watch(self, step_key: str, task_id: str) -> None:
        with self._lock:
            self._steps[task_id] = step_key

    def check(self) -> list[str]:
        """One round: ping the workers running watched steps; fail each step whose worker has been
        silent for ``lost_after`` seconds. Returns the keys of the steps failed."""
        with self._lock:
            steps = dict(self._steps)
        running: dict[str, str] = {}
        for task_id in steps:
            meta = self._app.backend.get_task_meta(task_id)  # one read: the state and, once started, the worker
            if meta["status"] in states.READY_STATES:
                self._forget(task_id)
            elif meta["status"] == states.STARTED and isinstance(meta["result"], dict):
                running[task_id] = meta["result"]["hostname"]
        workers = sorted(set(running.values()))
        replies = self._app.control.ping(destination=workers, timeout=PING_SECONDS) if workers else []
        answered = {name for reply in replies for name in reply}
        now = time.monotonic()
        self._silent_since = {w: self._silent_since.get(w, now) for w in workers if w not in answered}
        lost = []
        for task_id, worker in running.items():
            silent = now - self._silent_since.get(worker, now)
            if silent >= self._lost_after:
                self._app.control.revoke(task_id, terminate=True)
                message = (
                    f"Celery worker {worker} stopped answering while it ran step {steps[task_id]} "
                    f"(no reply for {silent:.0f} s); the run fails so that run retries run the step on another worker"
                )
                self._app.backend.mark_as_failure(task_id, WorkerLostError(message))
                self._forget(task_id)
                lost.append(steps[task_id])
        return lost

    @contextmanager
    def watching(self) -> Iterator[None]:
        """``check`` every ``WATCH_EVERY_SECONDS`` in a thread, for the block's duration."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(WATCH_EVERY_SECONDS):
                try:
                    self.check()
                except Exception:  # the broker unreachable for a moment: try again next round
                    logging.getLogger(__name__).warning("could not check the Celery workers", exc_info=True)

        thread = threading.Thread(target=loop, name="vidpipe-worker-watch", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _forget(self, task_id: str) -> None:
        with self._lock:
            self._steps.pop(task_id, None)


class WatchedCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor, with its steps' workers watched (``WorkerWatch``)."""

    def execute(self, plan_context, execution_plan):
        watch = WorkerWatch(make_app(self.app_args()))

        def submit(app, context, step, queue, priority, known_state):
            with warnings.catch_warnings():
                # dagster-celery defines its task again for every step it sends; Celery 5.7 warns that the
                # second definition is not registered, which is what it wants (the first is the same task).
                warnings.simplefilter("ignore", DuplicateTaskNameWarning)
                result = submit_celery_step(app, context, step, queue, priority, known_state)
            watch.watch(step.key, result.id)
            return result

        with watch.watching():
            yield from core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


def celery_step_executor(broker: str) -> dg.ExecutorDefinition:
    """``step_executor``'s config, with every step sent to Celery workers through ``broker``
    (``celery_app_config``). ``in_one_process`` is accepted and has no effect: a cluster runs steps on
    its workers whatever the upload's size."""

    @dg.executor(
        name="vidpipe_celery_executor",
        config_schema={
            "in_one_process": dg.Field(bool, default_value=True, description="No effect with Celery workers.")
        },
        requirements=dg.multiple_process_executor_requirements(),
    )
    def celery_steps(_init_context: dg.InitExecutorContext) -> dg.Executor:
        return WatchedCeleryExecutor(retries=RetryMode(RetryMode.ENABLED), **celery_app_config(broker))

    return celery_steps


def deployment_executor() -> dg.ExecutorDefinition:
    """``celery_step_executor`` when ``VIDPIPE_CELERY_BROKER`` is set, else ``step_executor``."""
    broker = settings.celery_broker()
    return celery_step_executor(broker) if broker else step_executor


CONSOLE_LOG_LEVEL = "INFO"
"""What a run prints on the console (``console.operator_console``): progress, each video's outcome, warnings
and errors. (A run config without a ``loggers`` section gets Dagster's own DEBUG console instead, whatever
the job's defaults say, so every run config carries it.)"""


def executor_run_config(*, in_one_process: bool = True) -> dict:
    """Run config choosing how a run of a job that uses ``step_executor`` executes its steps, its console
    level, and the file that keeps every message of it (``settings.run_log_file``)."""
    return {
        "execution": {"config": {"in_one_process": in_one_process}},
        "loggers": {"console": {"config": {"log_level": CONSOLE_LOG_LEVEL, "log_file": str(settings.run_log_file())}}},
    }
