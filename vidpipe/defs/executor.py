"""How a run executes its steps: a process per step, or all in the run's own process."""

import dagster as dg

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
