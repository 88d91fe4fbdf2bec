"""How a run executes its steps: a process per step, or all in the run's own process; or, on a
cluster, each step on a Celery worker."""

import dagster as dg
from dagster_celery import celery_executor

from vidpipe import settings

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
            default_value=False,
            description="Run every step in the run's own process, one after another. Starting step "
            "processes costs ~4 s of CPU per run on 2 cores, most of a small upload's run; with a process "
            "per step the thumbnail is made while the renditions encode.",
        )
    },
)


ENCODE_QUEUE = "encode"
"""The Celery queue of the encode step (``QUEUE_TAG`` on the renditions op); every other step goes to
``dagster``, dagster-celery's default. A worker started with ``-q encode`` alone is an encode machine."""
QUEUE_TAG = "dagster-celery/queue"


def celery_step_executor(broker: str) -> dg.ExecutorDefinition:
    """``step_executor``'s config, with every step sent to Celery workers through ``broker`` (a Redis URL,
    also the result backend). ``in_one_process`` is accepted and has no effect: a cluster runs steps on
    its workers whatever the upload's size."""
    celery_config = {"broker": broker, "backend": broker}
    return celery_executor.configured(
        lambda _: celery_config,
        name="vidpipe_celery_executor",
        config_schema={
            "in_one_process": dg.Field(bool, default_value=False, description="No effect with Celery workers.")
        },
    )


def deployment_executor() -> dg.ExecutorDefinition:
    """``celery_step_executor`` when ``VIDPIPE_CELERY_BROKER`` is set, else ``step_executor``."""
    broker = settings.celery_broker()
    return celery_step_executor(broker) if broker else step_executor


CONSOLE_LOG_LEVEL = "INFO"
"""What a run prints on the console (``console.operator_console``): progress, each video's outcome, warnings
and errors. (A run config without a ``loggers`` section gets Dagster's own DEBUG console instead, whatever
the job's defaults say, so every run config carries it.)"""


def executor_run_config(*, in_one_process: bool) -> dict:
    """Run config choosing how a run of a job that uses ``step_executor`` executes its steps, its console
    level, and the file that keeps every message of it (``settings.run_log_file``)."""
    return {
        "execution": {"config": {"in_one_process": in_one_process}},
        "loggers": {"console": {"config": {"log_level": CONSOLE_LOG_LEVEL, "log_file": str(settings.run_log_file())}}},
    }
