"""What a run prints on the console: one line per message, for the operator watching it.

Dagster's own console logger prints every event and a stack trace with each failure; the full
record stays in the run's event log in the UI. This logger prints what an operator follows:
progress, each video's outcome, and a failure as the one line a person reads in the UI.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path

import dagster as dg

from vidpipe.defs.dagster_internals import LOG_RECORD_METADATA
from vidpipe.defs.partitions import PARTITION_TAG, failure_reason


def _about(record: logging.LogRecord) -> tuple[str, str, str, dg.DagsterEvent | None]:
    """What a run's log record is about: its message, video, step ("run" for none) and Dagster event."""
    meta = getattr(record, LOG_RECORD_METADATA, None) or {}
    message = meta.get("orig_message") or record.getMessage()
    video = (meta.get("job_tags") or {}).get(PARTITION_TAG, "-")
    return message, video, meta.get("step_key") or "run", meta.get("dagster_event")


class OperatorFormatter(logging.Formatter):
    """``09:16:06 ERROR   broken-b72506e22edc source_video: failed: the file holds 0.7 s of video …``"""

    def format(self, record: logging.LogRecord) -> str:
        message, video, where, event = _about(record)
        if event is not None and event.is_step_failure:
            message = f"failed: {failure_reason(event)}"
        lines = message.strip().splitlines()
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{when} {record.levelname:<7} {video} {where}: {lines[0] if lines else ''}"


SKIPPED_STEP_MESSAGE = "Dependencies for step "
"""How Dagster's engine begins the error it logs for a step skipped after an upstream failure."""


def not_a_skip(record: logging.LogRecord) -> bool:
    """Steps skipped because an earlier one failed say nothing new: the failure has its line."""
    meta = getattr(record, LOG_RECORD_METADATA, None) or {}
    return meta.get("dagster_event") is not None or not str(meta.get("orig_message", "")).startswith(
        SKIPPED_STEP_MESSAGE
    )


class LogFileFormatter(logging.Formatter):
    """``2026-11-29 09:16:06 DEBUG   holiday-0123456789ab renditions STEP_START: <the whole message>``"""

    def format(self, record: logging.LogRecord) -> str:
        message, video, where, event = _about(record)
        message = message.rstrip()
        kind = f" {event.event_type_value}" if event is not None else ""
        if event is not None and event.is_step_failure:
            message += "\n" + _failure_details(event)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return f"{when} {record.levelname:<7} {video} {where}{kind}: {message}"


def _failure_details(event: dg.DagsterEvent) -> str:
    """A failed step's reason, its metadata (the file, ffmpeg's last stderr lines) and the whole error."""
    data = event.step_failure_data
    lines = [f"reason: {failure_reason(event)}"]
    if data.user_failure_data:
        lines += [f"{name}: {value.value}" for name, value in data.user_failure_data.metadata.items()]
    if data.error:
        lines.append(data.error.to_string())
    return "\n".join(lines).rstrip()


@dg.logger(
    {
        "log_level": dg.Field(str, default_value="INFO", description="DEBUG, INFO, WARNING or ERROR"),
        "log_file": dg.Field(
            str, default_value="", description="Also append every message, DEBUG included, to this file ('': none)."
        ),
    },
    description="One line per message on stderr: progress, outcomes, failures without stack traces; "
    "optionally every message in a file.",
)
def operator_console(init_context: dg.InitLoggerContext) -> logging.Logger:
    # A logger of its own per run (not logging.getLogger's shared one), so handlers never pile up.
    logger = logging.Logger("vidpipe", level=logging.DEBUG)  # noqa: LOG001
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(init_context.logger_config["log_level"].upper())
    console.setFormatter(OperatorFormatter())
    console.addFilter(not_a_skip)
    logger.addHandler(console)
    if log_file := init_context.logger_config["log_file"]:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        # Appends of one line from several run workers do not interleave; logrotate may move the file.
        to_file = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(LogFileFormatter())
        logger.addHandler(to_file)
    return logger
