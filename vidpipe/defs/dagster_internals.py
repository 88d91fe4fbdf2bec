"""Every use of Dagster's private API (``dagster._…``, and one private function of dagster-celery) in vidpipe
and its tests, in one place.

Dagster is pinned (``dagster==1.13.27``); on an upgrade, this file and the tests named here
say what to check. Everything else imports these names from here, never from ``dagster._…``.

| name | from | used by | guarded by |
|---|---|---|---|
| ``InstanceRef``, ``ConfigurableClassData`` | ``dagster._core.instance.ref``, ``dagster._serdes`` | ``step_preload`` (the instance's storage classes, imported before step processes fork); ``run_launcher`` (how the instance builds it from ``dagster.yaml``) | ``test_executor.py::test_step_processes_preload_the_classes_of_the_instance_they_open``, ``test_recovery.py`` |
| ``CheckRunHealthResult``, ``WorkerStatus`` | ``dagster._core.launcher`` | ``run_launcher`` (what a run worker health check returns) | ``test_recovery.py`` |
| ``GrpcServerCodeLocationOrigin``, ``DagsterUserCodeUnreachableError`` | ``dagster._core.remote_origin``, ``dagster._core.errors`` | ``run_launcher`` (is the run's code server answering?) | ``test_recovery.py`` |
| ``DagsterRun`` | ``dagster._core.storage.dagster_run`` | ``run_launcher`` (type of the run it checks) | ``test_recovery.py`` |
| ``LOG_RECORD_METADATA`` | ``dagster._core.log_manager.LOG_RECORD_METADATA_ATTR`` | ``console`` (a log record's run, step and event) | ``test_executor.py`` (the console and log file lines) |
| ``EngineEventData``, ``RemoteJobOrigin``, ``RemoteRepositoryOrigin`` | ``dagster._core.events``, ``dagster._core.remote_origin`` | tests only: a run worker's pid event, a run's code location | ``test_recovery.py`` |
| ``RetryMode`` | ``dagster._core.execution.retries`` | ``executor`` (the celery executor's step retries, on as in ``dagster_celery.celery_executor``'s default) | ``test_cluster.py`` |
| ``submit_celery_step`` | ``dagster_celery.executor._submit_task`` (private to dagster-celery 0.29.27) | ``executor`` (sends one step to Celery; vidpipe notes the task it returns to watch its worker) | ``test_cluster.py``, ``test_executor.py::test_a_step_whose_worker_is_killed_fails_instead_of_waiting_forever`` |
| ``execute_run_command_body``, ``capture_interrupts`` | ``dagster._cli.api._execute_run_command_body``, ``dagster._utils.interrupts`` | ``warm_runs`` (a forked run worker executes its run as ``dagster api execute_run`` does; a SIGINT interrupts it as Dagster's termination does) | ``test_warm_runs.py`` |
| ``LaunchRunContext`` | ``dagster._core.launcher`` | ``run_launcher`` (what ``launch_run`` is given) | ``test_warm_runs.py`` |
| ``StaleStatus``, ``get_stale_status_resolver`` | ``dagster._core.definitions.data_version``, ``dagster._utils.test.data_versions`` | tests only: which rungs a code change marks stale | ``test_pipeline.py`` |
"""

from typing import TYPE_CHECKING

from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.events import EngineEventData
from dagster._core.execution.retries import RetryMode
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.log_manager import LOG_RECORD_METADATA_ATTR as LOG_RECORD_METADATA
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClassData
from dagster_celery.executor import _submit_task as submit_celery_step

__all__ = [
    "LOG_RECORD_METADATA",
    "CheckRunHealthResult",
    "ConfigurableClassData",
    "DagsterRun",
    "DagsterUserCodeUnreachableError",
    "EngineEventData",
    "GrpcServerCodeLocationOrigin",
    "InstanceRef",
    "LaunchRunContext",
    "RemoteJobOrigin",
    "RemoteRepositoryOrigin",
    "RetryMode",
    "WorkerStatus",
    "capture_interrupts",
    "execute_run_command_body",
    "submit_celery_step",
]


if TYPE_CHECKING:
    from dagster._cli.api import _execute_run_command_body as execute_run_command_body
    from dagster._utils.interrupts import capture_interrupts


def __getattr__(name: str) -> object:
    """The names that are slow to import, imported on first use so that only the processes that use them pay:
    the test-only ones (``dagster._utils.test`` takes about a second) and the run worker's (``dagster._cli``,
    0.1 s; imported by the warm process run workers fork from)."""
    if name == "execute_run_command_body":
        from dagster._cli.api import _execute_run_command_body

        return _execute_run_command_body
    if name == "capture_interrupts":
        from dagster._utils.interrupts import capture_interrupts

        return capture_interrupts
    if name == "StaleStatus":
        from dagster._core.definitions.data_version import StaleStatus

        return StaleStatus
    if name == "get_stale_status_resolver":
        from dagster._utils.test.data_versions import get_stale_status_resolver

        return get_stale_status_resolver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
