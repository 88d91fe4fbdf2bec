"""End to end with the real daemon: an upload whose name cannot travel in Dagster's tags as it is
(not UTF-8, a newline) dropped together with ordinary ones. Before, creating the runs failed for the
whole sensor tick, the partitions stayed, and every upload of that tick was skipped for ever.
"""

import json
import os
import shutil

from dagster import DagsterRunStatus

from vidpipe.defs.partitions import UPLOAD_FILE_TAG
from vidpipe.inbox import resolve_upload
from vidpipe.media.files import sha256_file
from vidpipe_tests.harness import (
    RUN_TIMEOUT,
    STARTUP_TIMEOUT,
    code_location_loaded,
    fail_on_sensor_error,
    process_video_runs,
    wait_until,
)

BAD_NAME = b"holiday \xff\xfe\nclip.mp4"


def test_a_bad_name_beside_good_ones_every_upload_is_processed(dagster_stack, tiny_clip, silent_clip, phone_clip):
    stack = dagster_stack

    def fail_fast() -> None:
        stack.check_alive()
        fail_on_sensor_error(stack.instance)

    with stack.logs_shown_on_failure():
        shutil.copyfile(phone_clip, os.path.join(os.fsencode(stack.inbox), BAD_NAME))
        shutil.copyfile(tiny_clip, stack.inbox / "good-1.mp4")
        shutil.copyfile(silent_clip, stack.inbox / "good-2.mp4")
        wait_until(
            lambda: code_location_loaded(stack.url), STARTUP_TIMEOUT, "vidpipe in the webserver", stack.check_alive
        )

        def all_succeeded():
            runs = process_video_runs(stack.instance)
            return len(runs) == 3 and all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in runs) and runs

        runs = wait_until(all_succeeded, 2 * RUN_TIMEOUT, "three successful runs", fail_fast)
    taken = {os.fsencode(resolve_upload(stack.inbox, r.dagster_run.tags[UPLOAD_FILE_TAG]).name) for r in runs}
    assert taken == {BAD_NAME, b"good-1.mp4", b"good-2.mp4"}
    manifests = {
        json.loads((stack.storage / r.dagster_run.tags["dagster/partition"] / "manifest.json").read_text())["source"][
            "sha256"
        ]: r
        for r in runs
    }
    assert set(manifests) == {sha256_file(clip) for clip in (phone_clip, tiny_clip, silent_clip)}
    [bad_run] = [r for r in runs if r.dagster_run.tags["vidpipe/upload_name"].startswith("holiday")]
    bad_key = bad_run.dagster_run.tags["dagster/partition"]
    assert bad_key.startswith("holiday-clip-")
    source = json.loads((stack.storage / bad_key / "source.json").read_text())
    assert source["name"] == "holiday \\xff\\xfe\\nclip.mp4"
    assert os.fsencode(resolve_upload(stack.inbox, source["name_ref"]).name) == BAD_NAME
