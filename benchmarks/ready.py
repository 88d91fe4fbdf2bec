"""S12: how soon a dropped video is playable and complete, and where its fixed cost goes, step by step.

    .venv/bin/python benchmarks/run.py --only S12                       # 10 s phone clip, 30 s 1080p, 5 min 720p
    .venv/bin/python benchmarks/run.py --only S12 --seconds 3 --long-seconds 6 --results /tmp/s12   # a quick look
    .venv/bin/python benchmarks/ready.py --timeline [--seconds 10] [--size 720x1280]   # one run's table

Each clip goes into the inbox of a fresh ``dagster-daemon`` (``run.running_daemon``, with a catalog of its own).
Drop → playable and drop → complete are the timestamps of the ``playable`` and ``video_manifest``
materializations in the run's event log, less the moment the file appeared under its name in the inbox.
A run's timeline comes from the instance's records only: the sensor tick that requested the run, the run
record and the run's event log (the ffmpeg encode from the renditions step's own log lines).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import dagster as dg
from run import make_input, running_daemon, wait_for

from vidpipe import settings
from vidpipe.defs.sensors import DAEMON_LOOP_SECONDS
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key

PLAYABLE, COMPLETE = dg.AssetKey("playable"), dg.AssetKey("video_manifest")
MISSING = "missing"
"""The value of a figure the records do not hold (``playable`` before the asset exists)."""
PARTITION_TAG = "dagster/partition"
ENCODE_START = re.compile(r"encoding .+ in one ffmpeg run")  # renditions.py's log line before ffmpeg starts
ENCODE_DONE = re.compile(r"encoding 100%")  # and its progress line once ffmpeg has finished
Event = dg.DagsterEventType
QUEUE = "the queue polls every 1 s, dagster.yaml"


@dataclass(frozen=True)
class Stage:
    """One stretch of a video's way from the inbox to its manifest: it took ``took`` seconds and ended ``at``
    seconds after the drop; None where the records lack one of its ends."""

    what: str
    at: float | None
    took: float | None
    note: str = ""


@dataclass(frozen=True)
class Ready:
    """One video dropped into a fresh daemon: seconds from the drop to playable (None before the ``playable``
    asset exists) and to complete, the seconds the copy into the inbox took, and the run's timeline."""

    playable: float | None
    complete: float | None
    copy: float
    timeline: list[Stage]


def finished(instance: dg.DagsterInstance, partition: str) -> bool:
    """Whether a run of ``partition`` has succeeded; raises if every run of it has failed (a failure the daemon
    would retry counts too: a benchmark should not wait on one)."""
    records = instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: partition}))
    if any(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records):
        return True
    failed = [r.dagster_run.run_id for r in records if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    if records and len(failed) == len(records):
        why = [e.user_message for e in instance.all_logs(failed[-1]) if e.dagster_event_type == Event.STEP_FAILURE]
        raise RuntimeError(f"run {failed[-1]} of {partition} failed: {why[-1] if why else 'see its event log'}")
    return False


def completed_run(instance: dg.DagsterInstance, partition: str) -> dg.RunRecord | None:
    """The latest successful run of ``partition``, else its latest run."""
    records = instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: partition}))
    done = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
    return next(iter(done or records), None)  # newest first


def requesting_tick(instance: dg.DagsterInstance, run_id: str, after: float) -> tuple[float, float | None] | None:
    """Start and end of the ``upload_sensor`` tick that requested ``run_id``, among the ticks since ``after``."""
    for state in instance.all_instigator_state():
        if state.instigator_name == "upload_sensor":
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after):
                if run_id in tick.run_ids:
                    return tick.timestamp, tick.end_timestamp
    return None


def encode_seconds(events: Sequence[dg.EventLogEntry]) -> dict[str, float]:
    """Seconds of ffmpeg encoding per step, from the step's log lines: from its first encode's start to its last
    one's 100 % (the rest of the ladder encodes beside the first rung)."""
    started: dict[str, float] = {}
    done: dict[str, float] = {}
    for e in events:
        step = e.step_key
        if e.dagster_event_type is not None or step is None:
            continue  # only the steps' own log lines
        if ENCODE_START.match(e.user_message):
            started.setdefault(step, e.timestamp)
        elif ENCODE_DONE.match(e.user_message) and step in started:
            done[step] = e.timestamp
    return {step: done[step] - started[step] for step in done}


def materialized(key: dg.AssetKey) -> str:
    return f"`{key.to_user_string()}` materialized"


def video_timeline(instance: dg.DagsterInstance, partition: str, dropped: float) -> list[Stage]:
    """The stages of ``partition``'s run from the drop (wall-clock ``dropped``) to RUN_SUCCESS, read from the
    instance's records: the sensor tick that requested it, the run record, the run's event log."""
    record = completed_run(instance, partition)
    if record is None:
        return [Stage(f"no run of {partition}", None, None)]
    run_id = record.dagster_run.run_id
    events = list(instance.all_logs(run_id))
    first: dict[Event, float] = {}
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    workers: dict[str, float] = {}
    made: dict[dg.AssetKey, tuple[float, str | None]] = {}
    for e in events:
        kind, step, event = e.dagster_event_type, e.step_key, e.dagster_event
        if kind is None:
            continue
        first.setdefault(kind, e.timestamp)
        if kind == Event.STEP_START and step:
            starts.setdefault(step, e.timestamp)
        elif kind == Event.STEP_SUCCESS and step:
            ends[step] = e.timestamp
        elif kind == Event.STEP_WORKER_STARTING and step:
            workers.setdefault(step, e.timestamp)
        elif kind == Event.ASSET_MATERIALIZATION and event is not None and event.asset_key in (PLAYABLE, COMPLETE):
            made.setdefault(event.asset_key, (e.timestamp, step))

    def stage(what: str, start: float | None, end: float | None, note: str = "") -> Stage:
        took = None if start is None or end is None else end - start
        return Stage(what, None if end is None else end - dropped, took, note)

    tick = requesting_tick(instance, run_id, dropped - 60)
    tick_start, tick_end = tick or (None, None)
    created = record.create_timestamp.timestamp()
    run_start, enqueued = first.get(Event.RUN_START), first.get(Event.RUN_ENQUEUED)
    worker = next((e.timestamp for e in events if e.message.startswith("Started process for run")), None)
    stages = [
        stage(
            f"drop → the sensor's evaluation (the daemon loops every {DAEMON_LOOP_SECONDS} s)",
            dropped,
            tick_start,
            "dropped half a loop after a tick: the average wait of an upload landing at a random moment",
        ),
        stage(
            f"sensor evaluation → run created (waits for the {settings.settle_seconds():g} s settle, hashes, catalog)",
            tick_start,
            created,
            "" if tick_end is None else f"the tick ended at +{tick_end - dropped:.2f} s",
        ),
        stage("run created → RUN_ENQUEUED (submitted to the run queue)", created, first.get(Event.RUN_ENQUEUED)),
    ]
    dequeued, starting = first.get(Event.RUN_DEQUEUED), first.get(Event.RUN_STARTING)
    if dequeued is None:  # Dagster 1.13's queue writes RUN_STARTING as it dequeues and launches
        stages.append(stage(f"RUN_ENQUEUED → RUN_STARTING (dequeued and launched; {QUEUE})", enqueued, starting))
    else:
        stages.append(stage(f"RUN_ENQUEUED → RUN_DEQUEUED ({QUEUE})", enqueued, dequeued))
        stages.append(stage("RUN_DEQUEUED → RUN_STARTING (launch)", dequeued, starting))
    stages += [
        stage(
            "RUN_STARTING → run worker up (forked from the warm process; for a daemon's first run a new Python, through the code server)",
            starting,
            worker,
        ),
        stage("run worker up → RUN_START", worker or starting, run_start),
    ]
    encodes = encode_seconds(events)
    for step in sorted(starts, key=starts.__getitem__):
        began = starts[step]
        ready = max([run_start or began, *(end for end in ends.values() if end <= began)])
        process = f"step process start {began - workers[step]:.2f} s" if step in workers else "in the run's process"
        stages.append(stage(f"{step}: before its STEP_START (process start + Dagster)", ready, began, process))
        encode = f"ffmpeg encode {encodes[step]:.2f} s" if step in encodes else ""
        stages.append(stage(f"{step}: STEP_START → STEP_SUCCESS", began, ends.get(step), encode))
    for key in (PLAYABLE, COMPLETE):
        at, step = made.get(key, (None, None))
        note = f"since {step}'s STEP_START" if step else f"no `{key.to_user_string()}` materialization in the run"
        stages.append(stage(materialized(key), starts.get(step or ""), at, note))
    last = max(ends.values(), default=None)
    stages.append(stage("last STEP_SUCCESS → RUN_SUCCESS", last, first.get(Event.RUN_SUCCESS)))
    return stages


def drop_and_time(clip: Path, timeout: float) -> Ready:
    """``clip`` dropped into a fresh daemon's inbox, waited for until its run has succeeded."""
    key = partition_key(clip.name, sha256_file(clip))  # before the drop: hashing competes for the cores
    with running_daemon() as (instance, drop):
        started = time.time()
        drop([clip])
        dropped = time.time()  # the file appeared under its name (its ctime: the settle counts from here)
        wait_for(partial(finished, instance, key), what=f"the run of {clip.name}", seconds=timeout)
        timeline = video_timeline(instance, key, dropped)
    at = {s.what: s.at for s in timeline}
    return Ready(at.get(materialized(PLAYABLE)), at.get(materialized(COMPLETE)), dropped - started, timeline)


def figure(what: str, value: float | None, target: str = "report", met: bool | None = None, how: str = "") -> dict:
    """A row as run.py's other single-figure rows make them; a figure the records lack is MISSING, not met."""
    return {"scenario": "S12", "what": what, "value": MISSING if value is None else round(value, 3),
            "target": target, "met": value is not None if met is None else met, **({"how": how} if how else {})}  # fmt: skip


def share(ready: Ready) -> float | None:
    return None if ready.playable is None or not ready.complete else ready.playable / ready.complete


def ready_rows(
    label: str, ready: Ready, playable_within: float | None = None, share_within: float | None = None
) -> list[dict]:
    """Drop → playable, drop → complete and playable / complete of one clip, with its targets if any."""
    how = f"from the file's appearance in the inbox (its copy there took {ready.copy:.2f} s)"
    playable_met = None if playable_within is None else ready.playable is not None and ready.playable <= playable_within
    ratio = share(ready)
    share_met = None if share_within is None else ratio is not None and ratio <= share_within
    return [
        figure(f"{label}: drop → playable (s)", ready.playable,
               "report" if playable_within is None else f"≤ {playable_within:g} s", playable_met, how),
        figure(f"{label}: drop → complete (s)", ready.complete, how=how),
        figure(f"{label}: playable / complete", ratio,
               "report" if share_within is None else f"≤ {share_within:g} × complete", share_met),
    ]  # fmt: skip


def timeline_rows(label: str, stages: list[Stage]) -> list[dict]:
    """The stages as rows: value the seconds each took, ``at_s`` when it ended, after the drop."""
    return [
        {**figure(f"{label} timeline: {s.what}", s.took, how=s.note),
         "at_s": None if s.at is None else round(s.at, 3)}
        for s in stages
    ]  # fmt: skip


def scenario_ready(seconds: float, long_seconds: float) -> list[dict]:
    """S12: a phone clip (portrait 720x1280, at most 10 s), the S1/S2 1080p clip (``seconds``) and a long
    1280x720 clip (``long_seconds``), each in a fresh daemon; and the phone clip's timeline."""
    short = min(seconds, 10.0)
    phone = make_input("s12-phone", "720x1280", short, seed=12)
    full_hd = make_input("one-video", "1920x1080", seconds)  # S1's and S2's clip
    long = make_input("s12-long", "1280x720", long_seconds, seed=14)
    phone_label = f"{short:g} s 720x1280 phone clip"
    phone_ready = drop_and_time(phone, 600 + 4 * short)
    rows = ready_rows(phone_label, phone_ready, playable_within=10)
    rows += ready_rows(f"{seconds:g} s 1080p", drop_and_time(full_hd, 600 + 4 * seconds), share_within=0.35)
    rows += ready_rows(f"{long_seconds:g} s 1280x720", drop_and_time(long, 600 + 4 * long_seconds))
    return rows + timeline_rows(phone_label, phone_ready.timeline)


def markdown(stages: list[Stage]) -> str:
    """The timeline as a Markdown table, for the engineers' notes."""

    def seconds(value: float | None) -> str:
        return MISSING if value is None else f"{value:.2f}"

    lines = ["| stage | ends at (s after drop) | took (s) | note |", "|---|---:|---:|---|"]
    lines += [f"| {s.what} | {seconds(s.at)} | {seconds(s.took)} | {s.note} |" for s in stages]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeline", action="store_true", required=True,
                        help="drop one clip into a fresh daemon's inbox and print its run's timeline")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10, help="the clip's length (default 10)")
    parser.add_argument("--size", default="720x1280", help="the clip's size (default 720x1280, a portrait phone clip)")
    args = parser.parse_args()
    clip = make_input("timeline", args.size, args.seconds, seed=15)
    ready = drop_and_time(clip, 600 + 4 * args.seconds)
    playable = MISSING if ready.playable is None else f"{ready.playable:.2f} s"
    complete = MISSING if ready.complete is None else f"{ready.complete:.2f} s"
    print(
        f"{clip.name}: drop → playable {playable}, drop → complete {complete} (copy into the inbox {ready.copy:.2f} s)"
    )
    print(markdown(ready.timeline))


if __name__ == "__main__":
    main()
