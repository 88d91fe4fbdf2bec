"""A run launcher that starts run workers warm and lets run monitoring notice a run worker that is gone.

Runs of vidpipe's own jobs start from a warm process (``warm_runs``; ``warm_run_workers: false``
in ``dagster.yaml`` turns it off), which starts beside the daemon's first run; that run, runs of
other code, and every run once the code has changed since the daemon started are launched by the
code server as ``DefaultRunLauncher`` does.

Dagster's ``DefaultRunLauncher`` starts each run's worker process from the code server but
cannot tell run monitoring whether that process still exists (its
``supports_check_run_worker_health`` is False). After vidpipe or the machine was killed
mid-encode, the run would stay STARTED until ``max_runtime_seconds`` and keep its ``ffmpeg``
pool slot. ``ProcessCheckingRunLauncher`` launches runs exactly as ``DefaultRunLauncher``
does and adds the health check; run monitoring (``dagster.yaml``) then marks such a run
failed, frees its pool slots, and run retries re-run it.

Run retries act the moment a run fails and give a retry up for good when the daemon cannot
reach the run's code server at that moment. So a lost run of a code server with a fixed
address (the systemd units) is reported only once that server has answered for
``CODE_SERVER_SETTLED_SECONDS``: the daemon notices a restarted code server within a second
or two. Until then the check says the run is still running.

What this relies on (the private names come from ``dagster_internals``;
``vidpipe_tests/defs/test_recovery.py`` guards them, with the crash test and
``vidpipe_tests/test_service.py`` end to end):

- ``CheckRunHealthResult`` and ``WorkerStatus``, what the check returns;
- the run worker's pid in the run's event log: before a run turns STARTED its worker logs an
  ``ENGINE_EVENT`` with ``EngineEventData.in_process(pid)`` (metadata ``pid``, no step key;
  "Started process for run (pid: N)."); a run executed by a command in its own process
  (``dagster asset materialize``) logs the same from its executor. Read with
  ``DagsterInstance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT)``;
- ``GrpcServerCodeLocationOrigin`` (a run's code server, as the workspace names it) and its
  gRPC client's ``get_server_id``, which raises ``DagsterUserCodeUnreachableError`` while the
  server is down;
- ``DefaultRunLauncher.__init__(inst_data)`` with ``ConfigurableClassData``,
  how the instance builds the launcher from ``dagster.yaml``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster import DagsterEventType, DefaultRunLauncher

from vidpipe.defs.dagster_internals import (
    CheckRunHealthResult,
    ConfigurableClassData,
    DagsterRun,
    DagsterUserCodeUnreachableError,
    GrpcServerCodeLocationOrigin,
    LaunchRunContext,
    WorkerStatus,
)
from vidpipe.defs.warm_runs import WARM, WORKER_TAG, WarmRunWorkers
from vidpipe.processes import PROC, process_start_time

START_TIME_SLACK_SECONDS = 2.0
VIDPIPE_MODULE = "vidpipe.definitions"
"""The boot time in ``/proc/stat`` is in whole seconds; the rest allows for small clock steps."""
CODE_SERVER_SETTLED_SECONDS = 4.0
CODE_SERVER_TIMEOUT_SECONDS = 5
EVENTS_PER_QUERY = 20


def process_running_since(pid: int, timestamp: float) -> bool:
    """Whether the process ``pid`` is alive and already existed at ``timestamp``.

    A pid is reused once its process is gone (after a restart or a reboot the old number may
    belong to anything): a process that started after ``timestamp`` is not the one that
    logged it.
    """
    started = process_start_time(pid)
    return started is not None and started <= timestamp + START_TIME_SLACK_SECONDS


class ProcessCheckingRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` plus a health check of each run's worker process, for run monitoring.

    Pids are checked on the machine where the daemon runs. ``DefaultRunLauncher`` starts run
    workers on the code server's machine, which is the daemon's machine in every deployment
    vidpipe's README describes (``dagster dev``, the systemd units). Where ``/proc`` is missing
    (not Linux) the launcher reports no health check and Dagster's behaviour is unchanged.
    """

    def __init__(self, inst_data: ConfigurableClassData | None = None, warm_run_workers: bool = True):
        super().__init__(inst_data=inst_data)
        self._code_servers_seen: dict[str, tuple[str, float]] = {}
        """Code server address → the id of the server answering there, and since when it has."""
        self._warm_run_workers = warm_run_workers
        self._warm: WarmRunWorkers | None = None
        """Made with the first run launched warm: only the daemon launches runs."""

    @classmethod
    def config_type(cls) -> dict:
        return {"warm_run_workers": dg.Field(bool, is_required=False, default_value=True)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> ProcessCheckingRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not (self._warm_run_workers and _of_vidpipe(run)):
            return super().launch_run(context)
        if self._warm is None:  # the first run since the daemon started: the warm process starts beside it
            self._warm = WarmRunWorkers()
            threading.Thread(target=self._warm.warm_up, name="vidpipe-warm-up", daemon=True).start()
        if not self._warm.ready():
            return super().launch_run(context)
        if not self._warm.current():
            self._instance.report_engine_event(
                "vidpipe's code changed since the daemon started: the run starts in a new process", run, cls=type(self)
            )
            return super().launch_run(context)
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: WARM})
        self._warm.start(run.run_id, self._instance.get_ref())
        return None

    def terminate(self, run_id: str) -> bool:
        """A warm run's worker gets a SIGINT, as the code server sends its own workers (any process on the
        daemon's machine can terminate it, the webserver's too); other runs as ``DefaultRunLauncher`` does."""
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.tags.get(WORKER_TAG) != WARM:
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        worker = self._run_worker(run_id)
        if worker is None or not process_running_since(*worker):
            self._instance.report_engine_event("the run's worker process is not running", run, cls=type(self))
            return False
        os.kill(worker[0], signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return (PROC / "self" / "stat").exists()

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = self._run_worker(run.run_id)
        if worker is None:
            # Its worker has not logged its pid yet; run monitoring asks again next time.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run worker has not reported its pid yet")
        pid, logged_at = worker
        if process_running_since(pid, logged_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        gone = f"the run worker (pid {pid}) is gone"
        if waiting_for := self._code_server_not_settled(run):
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"{gone}; the run fails, to be re-run, once {waiting_for}", run_worker_id=str(pid)
            )
        return CheckRunHealthResult(
            WorkerStatus.NOT_FOUND,
            f"{gone}: the machine or vidpipe was stopped or crashed",
            run_worker_id=str(pid),
        )

    def _run_worker(self, run_id: str) -> tuple[int, float] | None:
        """The pid of the run's worker process and when it logged it: the run's first engine event with a pid."""
        cursor = None
        while True:
            page = self._instance.get_records_for_run(
                run_id, cursor=cursor, of_type=DagsterEventType.ENGINE_EVENT, limit=EVENTS_PER_QUERY
            )
            for record in page.records:
                event = record.event_log_entry.dagster_event
                pid = event.engine_event_data.metadata.get("pid") if event and not event.step_key else None
                if pid is not None and isinstance(pid.value, (int, str)):
                    return int(pid.value), record.timestamp
            if not page.has_more:
                return None
            cursor = page.cursor

    def _code_server_not_settled(self, run: DagsterRun) -> str | None:
        """What to wait for before the lost ``run`` can be re-run; None if nothing.

        Only a code server with a fixed address can be down while the daemon runs; one that
        ``dagster dev`` or the daemon itself started lives and dies with them.
        """
        origin = run.remote_job_origin.repository_origin.code_location_origin if run.remote_job_origin else None
        if not isinstance(origin, GrpcServerCodeLocationOrigin) or origin.port is None:
            return None
        address = f"{origin.host}:{origin.port}"
        try:
            server_id = origin.create_client().get_server_id(timeout=CODE_SERVER_TIMEOUT_SECONDS)
        except DagsterUserCodeUnreachableError:
            return f"its code server at {address} answers"
        seen_id, since = self._code_servers_seen.get(address, (None, 0.0))
        if seen_id != server_id:  # first asked, or restarted since
            since = time.monotonic()
            self._code_servers_seen[address] = (server_id, since)
        if time.monotonic() - since < CODE_SERVER_SETTLED_SECONDS:
            return f"its code server at {address} has answered for {CODE_SERVER_SETTLED_SECONDS:g} s"
        return None


def _of_vidpipe(run: DagsterRun) -> bool:
    """Whether ``run`` is of a job of vidpipe's own code location (the code the warm process holds)."""
    origin = run.job_code_origin
    return origin is not None and getattr(origin.repository_origin.code_pointer, "module", None) == VIDPIPE_MODULE
