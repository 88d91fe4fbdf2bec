"""What every part of vidpipe's Dagster layer shares: the partitions (one per uploaded video), the run
tags vidpipe reads and writes, and how a failed step's reason is read back for people."""

import dagster as dg

from vidpipe.inbox import name_ref, readable_name

VIDEOS = "videos"
videos = dg.DynamicPartitionsDefinition(name=VIDEOS)
"""One partition per uploaded video, keyed by name and content hash (``media.keys.partition_key``)."""

PARTITION_TAG = "dagster/partition"
UPLOAD_FILE_TAG = "vidpipe/upload_file"
"""The upload's exact name in the inbox, percent-encoded (``inbox.name_ref``): a run reads nothing else."""
UPLOAD_NAME_TAG = "vidpipe/upload_name"
"""The upload's name for people (``inbox.readable_name``)."""
FAILURE_TAG = "vidpipe/failure"
"""On a failed run: its reason, where the runs list shows it."""
FAILURE_TAG_CHARS = 200
REJECTED_TAG = "vidpipe/rejected"
"""On a failed run whose upload was refused: filter the UI's runs list by it to list rejections."""
WILL_RETRY_TAG = "dagster/will_retry"
"""Set by Dagster on a failed run: whether the instance's run retries will re-run it."""


def upload_tags(name: str) -> dict[str, str]:
    """The tags of a run that takes the inbox file ``name``: printable ASCII whatever bytes the name has."""
    return {UPLOAD_FILE_TAG: name_ref(name), UPLOAD_NAME_TAG: readable_name(name)}


def failure_reason(event: dg.DagsterEvent) -> str:
    """What a failed step's event says to a person: the ``Failure`` description, else the error's last line."""
    data = event.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        return data.user_failure_data.description
    return data.error.message.strip().splitlines()[-1] if data.error else "the step failed"
