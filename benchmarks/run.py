"""vidpipe's benchmarks: every timing is a ratio against a baseline measured in the same run.

    .venv/bin/python benchmarks/run.py                 # all scenarios; S1/S2/S3 --repeat times (3)
    .venv/bin/python benchmarks/run.py --only S1,S3 --repeat 1 --seconds 10

It generates its own inputs (ffmpeg lavfi sources) under benchmarks/.work/. Each repetition
measures a scenario and its baseline one after the other; the reported ratio is the median of
those per-repetition (paired) ratios. S1, S2 and S3 run --repeat times, S4 and C4 --small-repeat
times (1), S5 and S6 once. It prints the figures and writes latest.{json,csv,png} to --results
(benchmarks/results/). Machines here are shared and noisy: only ratios measured side by side
mean anything.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import dagster as dg
from catalog_scale import SIZES, scenario_catalog_scale
from PIL import Image, ImageDraw

from vidpipe.catalog import migrate
from vidpipe.cluster import WORKERS
from vidpipe.definitions import process_video_job
from vidpipe.defs.executor import executor_run_config
from vidpipe.defs.partitions import VIDEOS, upload_tags
from vidpipe.defs.sensors import DAEMON_LOOP_SECONDS
from vidpipe.inbox import InboxCursor, scan_inbox
from vidpipe.media.encoder import build_encode_command, run_encode
from vidpipe.media.ffmpeg_calls import run_tool
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key
from vidpipe.media.ladder import DEFAULT_LADDER, plan_ladder
from vidpipe.media.packaging import StreamInput, package_stream
from vidpipe.media.probe import VideoInfo, probe
from vidpipe.media.quality import SSIM_FLOOR, WINDOWS, Rendition, quality_report
from vidpipe.media.storyboard import make_storyboard
from vidpipe.media.thumbnail import first_frame_command
from vidpipe.processes import cpu_seconds

if TYPE_CHECKING:
    from vidpipe_tests.clusters import Cluster

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
RESULTS = HERE / "results"
LADDER_AUDIO = {rung.name: rung.audio_kbps for rung in DEFAULT_LADDER}


def make_input(name: str, size: str, seconds: float, rate: int = 30, seed: int = 0) -> Path:
    """testsrc2 with temporal noise (so encoders work as on camera footage) and a tone; ``seed`` varies the bytes."""
    path = WORK / f"{name}-{size}-{seconds:g}s.mp4"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
             "-vf", f"noise=alls=3:allf=t:all_seed={seed}", "-c:v", "libx264", "-preset", "fast", "-crf", "18", "-pix_fmt", "yuv420p",
             "-c:a", "aac", str(path)],
            check=True,
        )  # fmt: skip
    return path


def timed_command(argv: list[str]) -> float:
    start = time.perf_counter()
    run_tool(argv, timeout=3600)
    return time.perf_counter() - start


# --- S1 / S3: one video, vidpipe against raw ffmpeg and against one process per output ---


def fresh_catalog(folder: Path) -> str:
    """The URL of a migrated catalog in ``folder`` (made if missing): a benchmark writes no rows into the
    developer's one (``data/catalog.sqlite``, which may not exist)."""
    url = f"sqlite:///{folder / 'catalog.sqlite'}"
    migrate(url)
    return url


def execute_process_video(
    clip: Path, storage: Path, *, in_one_process: bool = True
) -> tuple[str, list[dg.EventLogEntry]]:
    """One process_video run of ``clip``, started with ``dg.execute_job`` in this very process.

    Its steps run in the run's process as the daemon's runs do, or (``in_one_process`` False) each in a step
    process forked from the preloaded forkserver, on a temporary sqlite instance. No daemon, queue or code
    server is involved: that is S2. Returns the video's partition key and the run's event log.
    """
    os.environ["VIDPIPE_STORAGE"] = str(storage)
    os.environ["VIDPIPE_INBOX"] = str(clip.parent)
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-") as home, dg.instance_for_test(temp_dir=home) as instance:
        # Not in ``home``: the forkserver keeps the environment of the first run's (benchmarks/.work is the same).
        os.environ["VIDPIPE_CATALOG"] = fresh_catalog(WORK)
        key = partition_key(clip.name, sha256_file(clip))
        instance.add_dynamic_partitions(VIDEOS, [key])
        result = dg.execute_job(
            dg.reconstructable(process_video_job),
            instance=instance,
            tags={"dagster/partition": key, **upload_tags(clip.name)},
            run_config=executor_run_config(in_one_process=in_one_process),
        )
        assert result.success, "vidpipe run failed"
        return key, list(instance.all_logs(result.run_id))


def run_start_to_manifest(events: list[dg.EventLogEntry]) -> float:
    """Seconds from a run's start event to its manifest's materialization event."""
    started = next(e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.RUN_START)
    manifest_done = next(
        e.timestamp
        for e in events
        if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        and e.dagster_event is not None
        and e.dagster_event.asset_key == dg.AssetKey("video_manifest")
    )
    return manifest_done - started


def vidpipe_run(clip: Path, storage: Path) -> tuple[float, dict]:
    """Seconds from run start to the manifest's materialization of one ``execute_process_video`` run."""
    key, events = execute_process_video(clip, storage)
    manifest = json.loads((storage / key / "manifest.json").read_text())
    return run_start_to_manifest(events), manifest


def raw_ffmpeg(manifest: dict, source: Path, scratch: Path) -> float:
    """The work of a run as bare tool runs, one after another: ``raw_tools``, in all."""
    return sum(raw_tools(manifest, source, scratch).values())


def raw_tools(manifest: dict, source: Path, scratch: Path) -> dict[str, float]:
    """Seconds of each tool run a video's outputs take, without vidpipe or Dagster around them: the manifest's
    renditions encoded in one ffmpeg command with the same settings (``encode``; vidpipe's manifest records two
    since the playable milestone, the first rung's and the rest's, which the bare tools would not need), the
    first-frame thumbnail, and the storyboard (from the smallest H.264 rendition), stream packaging and quality
    measurement by the functions the assets call (``storyboard``, ``stream``, ``quality``; their ffmpeg or
    packager run is nearly all of them). Every output goes to ``scratch``.
    """
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    info = probe(source)
    made = {r["name"] for r in manifest["renditions"]}
    started = time.perf_counter()
    encoded = run_encode(
        build_encode_command(source, info, [p for p in plan_ladder(info).renditions if p.rung.name in made], scratch),
        info,
    )
    times = {"encode": time.perf_counter() - started}
    times["thumbnail"] = timed_command(first_frame_command(source, info))
    return times | streaming_outputs(source, info, encoded.outputs, scratch)


def streaming_outputs(source: Path, info: VideoInfo, renditions: dict[str, Path], scratch: Path) -> dict[str, float]:
    """The storyboard (from the smallest H.264 rendition, as the asset makes it), the stream and the quality
    report of finished ``renditions`` (rung name → file), made into ``scratch`` by the functions the assets
    call: the seconds of each."""
    probed = {name: probe(path) for name, path in renditions.items()}
    h264 = [name for name, rendition in probed.items() if rendition.video_codec == "h264"]
    smallest = min(h264, key=lambda name: probed[name].width * probed[name].height)
    stream_inputs = [
        StreamInput(name, renditions[name], audio_kbps=LADDER_AUDIO[name] if probed[name].has_audio else 0)
        for name, rendition in probed.items()
        if rendition.container.startswith("mov") and rendition.video_codec in ("h264", None)
    ]
    measured = [Rendition(name, path, probed[name]) for name, path in renditions.items()]
    steps: dict[str, Callable[[Path], object]] = {
        "storyboard": lambda out: make_storyboard(renditions[smallest], probed[smallest], out),
        "stream": lambda out: package_stream(stream_inputs, out),
        "quality": lambda out: quality_report(source, info, measured, out),
    }
    times = {}
    for name, make in steps.items():
        shutil.rmtree(scratch / name, ignore_errors=True)
        (scratch / name).mkdir(parents=True)
        started = time.perf_counter()
        make(scratch / name)
        times[name] = time.perf_counter() - started
    return times


def classic_pipeline(source: Path, scratch: Path) -> float:
    """The queue-per-task design: one ffmpeg process per output, one after another, same settings, then the
    same storyboard, stream and quality report as vidpipe makes (``streaming_outputs``)."""
    scratch.mkdir(parents=True, exist_ok=True)
    info = probe(source)
    started = time.perf_counter()
    outputs: dict[str, Path] = {}
    for plan in plan_ladder(info).renditions:
        outputs |= run_encode(build_encode_command(source, info, [plan], scratch), info).outputs
    run_tool(first_frame_command(source, info), timeout=60)
    encoded = time.perf_counter() - started
    return encoded + sum(streaming_outputs(source, info, outputs, scratch).values())


def ssim(rendition: Path, source: Path, width: int, height: int) -> float:
    out = subprocess.run(
        ["ffmpeg", "-v", "info", "-nostdin", "-i", str(rendition), "-i", str(source), "-lavfi",
         f"[1:v]scale={width}:{height}:flags=bicubic[ref];[0:v][ref]ssim", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    found = re.search(r"All:([0-9.]+)", out)
    assert found, out
    return float(found.group(1))


def scenario_one_video(repeat: int, seconds: float) -> list[dict]:
    clip = make_input("one-video", "1920x1080", seconds)
    vidpipe_times, raw_times, classic_times, added_times, encode_times = [], [], [], [], []
    manifest: dict[str, Any] = {}
    storage = WORK / "s1-storage"
    for _ in range(repeat):
        shutil.rmtree(storage, ignore_errors=True)
        elapsed, manifest = vidpipe_run(clip, storage)
        vidpipe_times.append(elapsed)
        tools = raw_tools(manifest, storage / manifest["video"] / "source.mp4", WORK / "s1-raw")
        raw_times.append(sum(tools.values()))
        added_times.append(tools["storyboard"] + tools["stream"] + tools["quality"])
        encode_times.append(tools["encode"])
        print(f"S9 parts (s): {json.dumps({name: round(value, 2) for name, value in tools.items()})}", flush=True)
        classic_times.append(classic_pipeline(clip, WORK / "s3-classic"))
    rows = [
        row(
            "S1",
            "vidpipe run via execute_job in the benchmark's process (run start → manifest) vs raw ffmpeg",
            vidpipe_times,
            raw_times,
            "≤",
            1.10,
        ),
        row(
            "S3",
            "classic one-process-per-output vs vidpipe's S1 run (speed-up)",
            classic_times,
            vidpipe_times,
            "≥",
            1.5,
        ),
        row(
            "S9",
            "storyboard + stream packaging + quality report, as a share of the encode",
            added_times,
            encode_times,
            "≤",
            0.15,
        ),
    ]
    video_dir = storage / manifest["video"]
    for rendition in manifest["renditions"]:
        if rendition["width"]:
            value = ssim(video_dir / rendition["path"], clip, rendition["width"], rendition["height"])
            sampled = manifest["quality"]["rungs"][rendition["name"]]["ssim"]
            what = f"{rendition['name']}, every frame (the quality asset, {WINDOWS} stretches: {sampled})"
            rows.append({"scenario": "SSIM", "what": what, "value": round(value, 4),
                         "target": f"≥ {SSIM_FLOOR}", "met": value >= SSIM_FLOOR})  # fmt: skip
    return rows


# --- S2 / S4: uploads dropped into the inbox of a running daemon ---


@contextmanager
def running_daemon() -> Iterator[tuple[dg.DagsterInstance, Callable[[list[Path]], None]]]:
    """A real dagster-daemon on a fresh instance (default settings) that has processed one small clip, ready half a
    loop after a sensor tick: its instance, and how to drop clips into its inbox.

    A platform's daemon runs for days: the clip is the run every daemon pays once after it starts, through the
    code server, while the warm process later runs fork from starts (``vidpipe/defs/warm_runs.py``)."""
    home = Path(tempfile.mkdtemp(prefix="vidpipe-bench-daemon-"))
    inbox, storage = home / "inbox", home / "storage"
    inbox.mkdir()
    (home / "dagster.yaml").symlink_to(REPO / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIDPIPE_INBOX": str(inbox), "VIDPIPE_STORAGE": str(storage),
           "VIDPIPE_CATALOG": fresh_catalog(home)}  # fmt: skip
    with open(home / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    previous_home = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)  # dagster.yaml reads it
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            wait_for(lambda: any(instance.get_ticks(s.instigator_origin_id, s.selector_id)
                                 for s in instance.all_instigator_state() if s.instigator_name == "upload_sensor"),
                     what="the upload sensor's first tick", seconds=120)  # fmt: skip
            first = make_input("daemon-warm-up", "320x240", 1)
            drop_in_folder(inbox, [first])
            key = partition_key(first.name, sha256_file(first))
            wait_for(lambda: key in instance.get_materialized_partitions(MANIFEST), what="the first run", seconds=120)
            ticked = max(t.timestamp for s in instance.all_instigator_state() if s.instigator_name == "upload_sensor"
                         for t in instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=1))  # fmt: skip
            # An upload lands at any moment of the daemon's loop: the clips land half a loop after a tick, the
            # average wait (one landing just after a tick waits 2.5 s more, one just before it 2.5 s less).
            time.sleep((ticked + DAEMON_LOOP_SECONDS / 2 - time.time()) % DAEMON_LOOP_SECONDS)
            yield instance, lambda clips: drop_in_folder(inbox, clips)
    finally:
        os.environ.pop("DAGSTER_HOME")
        if previous_home is not None:
            os.environ["DAGSTER_HOME"] = previous_home
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def wait_for(condition, *, what: str, seconds: float):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark timed out waiting for {what}")
        time.sleep(0.2)


def drop_in_folder(inbox: Path, clips: list[Path]) -> None:
    for clip in clips:
        shutil.copyfile(clip, inbox / f".{clip.name}.part")
        os.rename(inbox / f".{clip.name}.part", inbox / clip.name)


MANIFEST = dg.AssetKey("video_manifest")


def drop_and_wait(instance: dg.DagsterInstance, drop: Callable[[list[Path]], None], clips: list[Path]) -> float:
    """Seconds from the start of ``drop(clips)`` (into the inbox) to the last of their manifests materialized."""
    keys = {partition_key(clip.name, sha256_file(clip)) for clip in clips}
    dropped = time.time()
    drop(clips)
    wait_for(lambda: keys <= instance.get_materialized_partitions(MANIFEST), what="every manifest",
             seconds=600 + 120 * len(clips))  # fmt: skip
    last = max(
        record.event_log_entry.timestamp
        for record in instance.fetch_materializations(MANIFEST, limit=len(clips) + 2).records
        if record.partition_key in keys
    )
    return last - dropped


def raw_loop(clips: list[Path], scratch: Path) -> float:
    """The same outputs as bare tool runs, one video after another: the encode and the thumbnail as plain
    ffmpeg commands, then the storyboard, stream and quality report by the functions the assets call
    (``streaming_outputs``)."""
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for clip in clips:
        info = probe(clip)
        encoded = run_encode(build_encode_command(clip, info, list(plan_ladder(info).renditions), scratch), info)
        run_tool(first_frame_command(clip, info), timeout=60)
        streaming_outputs(clip, info, encoded.outputs, scratch)
    return time.perf_counter() - started


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has been busy since it started, over all cores (``/proc/stat``)."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_used() -> Iterator[list[float]]:
    """The machine's busy CPU seconds during the block, in the list it yields once the block ends."""
    used: list[float] = []
    before = machine_cpu_seconds()
    yield used
    used.append(machine_cpu_seconds() - before)


Deployment = tuple[dg.DagsterInstance, Callable[[list[Path]], None], Callable[[], dict[str, float]] | None]
"""A running vidpipe: its instance, how to drop clips into its inbox, and (on a cluster) the CPU seconds each
kind of its processes has used so far (``cluster_cpu_by_role``)."""


ROLE_WORDS = {
    "workers": "on the Celery workers, less the raw loop's ffmpeg",
    "daemon": "in the Dagster daemon",
    "code server": "in the code server (sensor evaluations, run plans)",
    "run workers": "in the run workers (forked from the warm process) and the rest of Dagster's processes",
    "webserver": "in the Dagster webserver",
    "postgres": "in PostgreSQL and PgBouncer",
    "weed": "in SeaweedFS (S3)",
    "redis": "in Redis",
    "elsewhere": "outside the cluster's live processes (the benchmark's own polling, exited processes)",
}
SERVERS = {"postgres": "postgres", "pgbouncer": "postgres", "weed": "weed", "redis-server": "redis"}
DAGSTER_ROLES = (
    ("dagster._daemon", "daemon"),
    ("dagster-daemon", "daemon"),
    ("dagster_webserver", "webserver"),
    ("code-server", "code server"),
    ("api grpc", "code server"),
)
"""Words of a Dagster process's command line → its role, the first that matches (``dagster dev`` gives the
daemon and the webserver the code server's ``--grpc-…`` address); any other (the run workers' forkserver and
the processes that started the cluster) is "run workers"."""


def dagster_role(argv: list[bytes]) -> str:
    words = b" ".join(argv).decode(errors="replace")
    return next((role for word, role in DAGSTER_ROLES if word in words), "run workers")


@dataclass(frozen=True)
class Drop:
    """One repetition of ``many_small``: seconds and the machine's busy CPU seconds of vidpipe's drop-to-done and
    of the raw loop, and (on a cluster) vidpipe's CPU seconds by role."""

    vidpipe_time: float
    raw_time: float
    vidpipe_cpu: float
    raw_cpu: float
    roles: dict[str, float]


def drop_many(count: int, started: Callable[[], AbstractContextManager[Deployment]], repetition: int) -> Drop:
    """``count`` new small clips (content of their own for each ``repetition``: the same content would be one
    upload each) dropped at once into a deployment ``started`` afresh, then the raw loop of the same clips."""
    name = "small" if repetition == 0 else f"small-r{repetition}"
    clips = [make_input(f"{name}-{i:02d}", "854x480", 5, seed=1000 * repetition + i) for i in range(count)]
    with started() as (instance, drop, cpu_by_role), cpu_used() as vidpipe_cpu:
        before = cpu_by_role() if cpu_by_role else {}
        vidpipe_time = drop_and_wait(instance, drop, clips)
        roles = {role: used - before.get(role, 0.0) for role, used in cpu_by_role().items()} if cpu_by_role else {}
    with cpu_used() as raw_cpu:
        raw_time = raw_loop(clips, WORK / "s4-raw")
    return Drop(vidpipe_time, raw_time, vidpipe_cpu[0], raw_cpu[0], roles)


def many_small(
    count: int,
    started: Callable[[], AbstractContextManager[Deployment]],
    scenario: str,
    where: str,
    throughput_target: float,
    cpu_target: float | None = None,
    repeat: int = 1,
) -> list[dict]:
    """``count`` small clips dropped at once into a running deployment, ``repeat`` times: throughput against a raw
    loop (the median of the paired ratios), and the CPU each run costs beyond ffmpeg's (the machine's busy CPU
    during vidpipe's drop-to-done, less that during the raw loop, per clip; the median over the repetitions); on
    a cluster, split between the workers and the rest (control machine, servers), over every repetition."""
    drops = [drop_many(count, started, repetition) for repetition in range(repeat)]
    fixed = [(d.vidpipe_cpu - d.raw_cpu) / count for d in drops]
    # Throughput ratio = (clips / vidpipe time) / (clips / raw time) = raw time / vidpipe time.
    rows = [
        row(scenario, f"{count} clips of 5 s 480p dropped at once {where}: throughput vs a raw loop",
            [d.vidpipe_time for d in drops], [d.raw_time for d in drops], "≥", throughput_target,
            ratio="baseline/measured"),
        {"scenario": scenario, "what": f"CPU per run beyond ffmpeg's {where} (s): busy CPU during drop-to-done less the raw loop's, per clip",
         "value": round(statistics.median(fixed), 2), "target": "report" if cpu_target is None else f"≤ {cpu_target:g} s",
         "met": cpu_target is None or statistics.median(fixed) <= cpu_target,
         "how": "; ".join(f"machine busy CPU {d.vidpipe_cpu:.1f} s vs raw loop {d.raw_cpu:.1f} s for {count} clips"
                          for d in drops)},
    ]  # fmt: skip
    if drops[0].roles:
        roles = {role: sum(d.roles[role] for d in drops) for role in drops[0].roles}
        roles["workers"] -= sum(d.raw_cpu for d in drops)  # their ffmpeg
        roles["elsewhere"] = sum(d.vidpipe_cpu - d.raw_cpu for d in drops) - sum(roles.values())
        for role, used in roles.items():
            rows.append({"scenario": scenario, "what": f"of which {ROLE_WORDS[role]} (s per run)",
                         "value": round(used / (count * repeat), 2), "target": "report", "met": True})  # fmt: skip
    return rows


def scenario_drop_to_done(repeat: int, seconds: float) -> list[dict]:
    clip = make_input("one-video", "1920x1080", seconds)
    vidpipe_times, raw_times = [], []
    for _ in range(repeat):
        with running_daemon() as (instance, drop):
            vidpipe_times.append(drop_and_wait(instance, drop, [clip]))
        raw_times.append(raw_loop([clip], WORK / "s2-raw"))
    return [row("S2", "drop in inbox → manifest, daemon running, vs raw ffmpeg", vidpipe_times, raw_times, "≤", 1.20)]


@contextmanager
def daemon_deployment() -> Iterator[Deployment]:
    with running_daemon() as (instance, drop):
        yield instance, drop, None


def scenario_many_small(count: int = 40, repeat: int = 1) -> list[dict]:
    return many_small(count, daemon_deployment, "S4", "on sqlite, one machine", 0.75, cpu_target=5.0, repeat=repeat)


# --- C1 / C4: S1 and S4 on the cluster (PostgreSQL, Celery workers, S3; ./dev.sh cluster) ---


def cluster_helpers() -> ModuleType:
    """The tests' helpers that start a cluster (``vidpipe_tests/clusters.py``, in the repository, not installed)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("vidpipe_tests.clusters")


@contextmanager
def cluster_for_benchmark() -> Iterator[Cluster]:
    """``vidpipe-cluster`` started by the tests' helper."""
    folder = Path(tempfile.mkdtemp(prefix="vidpipe-bench-cluster-"))
    try:
        with cluster_helpers().running_cluster(folder) as cluster:
            yield cluster
    finally:
        logs = WORK / "cluster-logs"  # the workers' logs say how long each step took
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        for log in (folder / "data" / "cluster").glob("*.log"):
            shutil.copy(log, logs)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def cluster_deployment() -> Iterator[Deployment]:
    cluster_processes = cluster_helpers().cluster_processes
    with cluster_for_benchmark() as cluster, cluster.instance() as instance:

        def drop(clips: list[Path]) -> None:
            cluster.upload(*clips)

        def cpu_by_role() -> dict[str, float]:
            workers = {
                pid for worker in WORKERS for pid, _ in cluster_processes(cluster.data, f"VIDPIPE_WORKER={worker}")
            }
            roles: dict[str, list[int]] = {role: [] for role in ROLE_WORDS if role != "elsewhere"}
            for pid, argv in cluster_processes(cluster.data):
                program = Path(argv[0].decode()).name
                role = "workers" if pid in workers else SERVERS.get(program) or dagster_role(argv)
                roles[role].append(pid)
            return {role: sum(map(cpu_seconds, pids)) for role, pids in roles.items()}

        yield instance, drop, cpu_by_role


def materialized(instance: dg.DagsterInstance, key: str) -> bool:
    return key in instance.get_materialized_partitions(dg.AssetKey("video_manifest"))


def scenario_cluster_one_video(repeat: int, seconds: float) -> list[dict]:
    """S1 on the cluster: run start → manifest, each step on a Celery worker, the original and every output
    through S3, the instance on PostgreSQL. Each repetition uploads a clip of new content (same content
    would be one upload to the sensor)."""
    vidpipe_times, raw_times = [], []
    with cluster_for_benchmark() as cluster, cluster.instance() as instance:
        for i in range(repeat):
            clip = make_input(f"cluster-{i}", "1920x1080", seconds, seed=100 + i)
            key = partition_key(clip.name, sha256_file(clip))
            cluster.upload(clip)
            wait_for(partial(materialized, instance, key), what="the manifest", seconds=900)
            [run] = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": key}))
            vidpipe_times.append(run_start_to_manifest(list(instance.all_logs(run.dagster_run.run_id))))
            raw_times.append(raw_ffmpeg(cluster.manifest(key), clip, WORK / "c1-raw"))
    return [row("C1", "S1 on the cluster (PostgreSQL, Celery workers, S3): run start → manifest vs raw ffmpeg",
                vidpipe_times, raw_times, "≤", 1.15)]  # fmt: skip


def scenario_cluster_many_small(count: int = 40, repeat: int = 1) -> list[dict]:
    return many_small(count, cluster_deployment, "C4", "on the cluster", 0.65, repeat=repeat)


# --- S5: a crowded inbox ---


def scenario_crowded_inbox(old_files: int = 10_000, new_files: int = 100) -> list[dict]:
    """Scan time and cursor size for 100 new uploads, beside 10,000 handled ones and beside none."""

    def tick(handled: int) -> tuple[float, int]:
        inbox = Path(tempfile.mkdtemp(prefix="vidpipe-inbox-"))
        for i in range(handled):
            (inbox / f"old-{i}.mp4").write_bytes(f"old {i}".encode())
        cursor = scan_inbox(inbox, InboxCursor(), settle_seconds=0, now_ns=time.time_ns() + 10**12).cursor
        for i in range(new_files):
            (inbox / f"new-{i}.mp4").write_bytes(f"new {i}".encode() * 1000)
        started = time.perf_counter()
        scan = scan_inbox(inbox, cursor, settle_seconds=0, now_ns=time.time_ns() + 10**12)
        elapsed = time.perf_counter() - started
        assert len(scan.uploads) == new_files
        shutil.rmtree(inbox)
        return elapsed, len(scan.cursor.to_json())

    crowded_time, crowded_cursor = tick(old_files)
    empty_time, empty_cursor = tick(0)
    return [
        row("S5", f"scan of {new_files} new files beside {old_files:,} handled vs beside none", [crowded_time],
            [empty_time], "≤", 2.0, absolute_target=("s", 2.0)),
        {"scenario": "S5", "what": "cursor bytes after the crowded scan", "value": crowded_cursor,
         "baseline": empty_cursor, "target": "≤ 65536", "met": crowded_cursor <= 65536},
    ]  # fmt: skip


# --- S6: memory ---


SAMPLE_SECONDS = 0.2
RUN_JOB_FLAG = "--s6-run-job"


def s6_run_job(clip: Path, storage: Path, out: Path) -> None:
    """In the child process S6 samples: one ``execute_process_video`` run with a process per step (what each
    step's tree costs); writes each step's process ids."""
    _, events = execute_process_video(clip, storage, in_one_process=False)
    pids: dict[str, list[int]] = {}
    for e in events:
        event = e.dagster_event
        if e.dagster_event_type == dg.DagsterEventType.STEP_START and event is not None and event.step_key:
            pids.setdefault(event.step_key, []).append(event.pid or 0)
    out.write_text(json.dumps(pids))


def process_table() -> dict[int, tuple[int, int]]:
    """Parent pid and resident bytes of every process, from /proc/<pid>/stat."""
    page = os.sysconf("SC_PAGE_SIZE")
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:  # gone since the listing
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()  # fields[0] is field 3 of proc(5): state
        table[int(entry.name)] = (int(fields[1]), int(fields[21]) * page)  # ppid (4), rss in pages (24)
    return table


def subtree(table: dict[int, tuple[int, int]], root: int) -> dict[int, tuple[int, int]]:
    """``root`` and all its descendants in ``table``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            found[pid] = table[pid]
            stack.extend(children.get(pid, []))
    return found


def tree_rss(sample: dict[int, tuple[int, int]], root: int) -> int:
    return sum(rss for _, rss in subtree(sample, root).values())


def scenario_memory(seconds: float) -> list[dict]:
    """Summed RSS of real process trees while the real job runs on a 4K clip.

    The job runs as in S1 (``execute_process_video``), in a fresh interpreter of its own; every
    ``SAMPLE_SECONDS`` the RSS of each process in that interpreter's tree is read from /proc.
    A step's tree is its step process (Python, Dagster, vidpipe) and the ffmpeg/ffprobe it
    starts; the run's tree adds the run process and the forkserver. RSS is summed per process,
    so pages shared between forked processes count once per process (an upper bound), and a
    peak shorter than the sampling interval can be missed.
    """
    clip = make_input("memory", "3840x2160", seconds)
    storage, pids_file, log_file = WORK / "s6-storage", WORK / "s6-steps.json", WORK / "s6-run.log"
    shutil.rmtree(storage, ignore_errors=True)
    pids_file.unlink(missing_ok=True)
    samples: list[dict[int, tuple[int, int]]] = []
    with open(log_file, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), RUN_JOB_FLAG, str(clip), str(storage), str(pids_file)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        while child.poll() is None:
            samples.append(subtree(process_table(), child.pid))
            time.sleep(SAMPLE_SECONDS)
    if child.returncode != 0:
        raise RuntimeError(f"S6 run failed ({child.returncode}):\n{log_file.read_text()[-3000:]}")
    steps: dict[str, list[int]] = json.loads(pids_file.read_text())

    def step_peak(step: str) -> int:
        return max(tree_rss(sample, pid) for sample in samples for pid in steps[step])

    encode, thumb = step_peak("renditions"), step_peak("thumbnail")
    run = max(tree_rss(sample, child.pid) for sample in samples)
    limit = 1.5 * 2**30
    how = f"summed RSS, sampled every {SAMPLE_SECONDS:g} s, {len(samples)} samples"
    return [
        {"scenario": "S6", "what": "peak RSS of the renditions step's process tree (step process + ffmpeg), 4K (MiB)",
         "value": round(encode / 2**20), "target": "≤ 1536", "met": encode <= limit, "how": how},
        {"scenario": "S6", "what": "peak RSS of the thumbnail step's process tree (step process + ffmpeg), 4K (MiB)",
         "value": round(thumb / 2**20), "target": "report", "met": True, "how": how},
        {"scenario": "S6", "what": "peak RSS of the whole run's process tree (run, forkserver, steps, ffmpeg), 4K (MiB)",
         "value": round(run / 2**20), "target": "report", "met": True, "how": how},
    ]  # fmt: skip


# --- reporting ---


def row(scenario, what, measured, baseline, sense, target, absolute_target=None, ratio="measured/baseline") -> dict:
    """The median of paired ratios: ``measured[i]`` and ``baseline[i]`` come from the same repetition.

    ``ratio`` says which way each pair is divided ("baseline/measured" for a throughput). With
    ``absolute_target`` the median of ``measured`` itself is judged, and the ratio only reported.
    """
    if len(measured) != len(baseline):
        raise ValueError(f"{scenario}: {len(measured)} measurements but {len(baseline)} baselines")
    pairs = list(zip(measured, baseline, strict=True))
    ratios = [m / b if ratio == "measured/baseline" else b / m for m, b in pairs]
    value = statistics.median(ratios)
    m, b = statistics.median(measured), statistics.median(baseline)
    judged = m if absolute_target else value
    met = judged <= target if sense == "≤" else judged >= target
    return {
        "scenario": scenario, "what": what, "value": round(value, 3), "repetitions": len(pairs),
        "ratio": ratio, "ratios": [round(x, 3) for x in ratios],
        "median_s": round(m, 3), "baseline_median_s": round(b, 3), "runs": [round(x, 3) for x in measured],
        "baseline_runs": [round(x, 3) for x in baseline],
        "target": f"{sense} {target}" + (f" {absolute_target[0]} (median)" if absolute_target else " (median of paired ratios)"),
        "met": met,
    }  # fmt: skip


def machine() -> dict:
    ffmpeg_version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )[0]
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ffmpeg": ffmpeg_version,
        "dagster": dg.__version__,
    }


CSV_FIELDS = ["scenario", "what", "value", "repetitions", "ratios", "median_s", "baseline_median_s", "target", "met"]


def write_results(rows: list[dict], meta: dict, results: Path = RESULTS) -> None:
    """Replace the rows of the scenarios just measured; keep the latest rows of the others."""
    results.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["measured_at"] = meta["when"]
    latest = results / "latest.json"
    measured = {r["scenario"] for r in rows}
    kept = (
        [r for r in json.loads(latest.read_text())["results"] if r["scenario"] not in measured]
        if latest.exists()
        else []
    )
    rows = sorted(kept + rows, key=lambda r: (r["scenario"] == "SSIM", r["scenario"]))
    latest.write_text(json.dumps({"machine": meta, "results": rows}, indent=2) + "\n")
    write_csv(rows, results / "latest.csv")
    chart(rows, results / "latest.png")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "ratios": " / ".join(str(x) for x in r["ratios"])} if "ratios" in r else r)


def chart(rows: list[dict], path: Path) -> None:
    """Bars of the timing ratios, with each target marked; drawn with Pillow."""
    ratios = [r for r in rows if "ratio" in r.get("target", "")]
    width, bar_h, left = 900, 40, 360
    image = Image.new("RGB", (width, 60 + bar_h * len(ratios) + 20), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), "vidpipe benchmarks: median of paired ratios (bar) and target (line)", fill="black")
    scale = (width - left - 40) / max([r["value"] for r in ratios] + [2.0])
    for i, r in enumerate(ratios):
        y = 50 + i * bar_h
        draw.text((10, y + 8), f"{r['scenario']} {r['what'][:48]}".replace("→", "->"), fill="black")
        draw.rectangle([left, y, left + r["value"] * scale, y + bar_h - 12], fill="#2563eb" if r["met"] else "#dc2626")
        draw.text((left + r["value"] * scale + 5, y + 8), f"{r['value']:.2f}", fill="black")
        target = float(r["target"].split()[1])
        draw.line([left + target * scale, y - 4, left + target * scale, y + bar_h - 8], fill="black", width=2)
    image.save(path)


def scenarios(args: argparse.Namespace) -> list[tuple[set[str], Callable[[], list[dict]]]]:
    """Which scenario ids each measurement gives, in the order they run (S9 and S3 come with S1's runs)."""
    from ready import scenario_ready  # here, not at the top: ready.py imports this module's helpers

    return [
        ({"S1", "S3", "S9"}, partial(scenario_one_video, args.repeat, args.seconds)),
        ({"S2"}, partial(scenario_drop_to_done, args.repeat, args.seconds)),
        ({"S4"}, partial(scenario_many_small, args.small_clips, args.small_repeat)),
        ({"C1"}, partial(scenario_cluster_one_video, args.repeat, args.seconds)),
        ({"C4"}, partial(scenario_cluster_many_small, args.small_clips, args.small_repeat)),
        ({"S5"}, scenario_crowded_inbox),
        ({"S6"}, partial(scenario_memory, min(args.seconds, 10))),
        ({"S10"}, partial(scenario_catalog_scale, tuple(args.catalog_sizes), args.s3_videos)),
        ({"S12"}, partial(scenario_ready, args.seconds, args.long_seconds)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of S1, S2 and S3 (S4, S5, S6 run once)")
    parser.add_argument("--seconds", type=float, default=30, help="length of the S1/S3 clip and S12's 1080p one")
    parser.add_argument("--long-seconds", type=float, default=300, help="length of S12's long 720p clip")
    parser.add_argument("--small-clips", type=int, default=40, help="how many clips S4 and C4 drop at once")
    parser.add_argument(
        "--small-repeat", type=int, default=1, help="repetitions of S4 and C4 (each a fresh deployment and clips)"
    )
    parser.add_argument(
        "--only", default="S1,S2,S3,S4,S5,S6,S10,S12,C1,C4", help="comma-separated scenarios (S9 runs with S1)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for latest.{json,csv,png}")
    parser.add_argument("--catalog-sizes", type=int, nargs="+", default=list(SIZES), help="S10's catalog sizes")
    parser.add_argument("--s3-videos", type=int, default=100_000, help="S10's stored videos in S3 (beside 1,000)")
    parser.add_argument(RUN_JOB_FLAG, nargs=3, metavar=("CLIP", "STORAGE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.s6_run_job:
        s6_run_job(*(Path(arg) for arg in args.s6_run_job))
        return
    chosen = set(args.only.split(","))
    rows: list[dict] = []
    for ids, scenario in scenarios(args):
        if chosen & ids:
            rows += scenario()
    meta = machine()
    write_results(rows, meta, args.results)
    print(f"machine: {meta['cpus']} CPUs, {meta['platform']}, {meta['ffmpeg']}, dagster {meta['dagster']}")
    for r in rows:
        if r["scenario"] == "S10" and not r["target"].startswith(("≤", "equal")):
            continue  # S10's per-size figures: in the results files
        detail = ""
        if "ratios" in r:
            detail = (
                f" ({r['repetitions']} repetition(s), {r['ratio']} per repetition: "
                f"{' / '.join(str(x) for x in r['ratios'])}; median {r['median_s']} s vs {r['baseline_median_s']} s)"
            )
        print(f"{r['scenario']:5} {r['what']:62} {r['value']:>9} target {r['target']:<18} "
              f"{'met' if r['met'] else 'MISSED'}{detail}")  # fmt: skip
    print(f"results: {args.results / 'latest.json'}, .csv, .png")


if __name__ == "__main__":
    main()
