"""vidpipe's benchmarks: every figure is a ratio against a baseline measured in the same run.

    .venv/bin/python benchmarks/run.py                 # all scenarios, 3 repetitions
    .venv/bin/python benchmarks/run.py --only S1,S3 --repeat 1 --seconds 10

It generates its own inputs (ffmpeg lavfi sources) under benchmarks/.work/, prints medians
and ratios, and writes benchmarks/results/latest.{json,csv,png}. Machines here are shared
and noisy: only ratios measured side by side mean anything.
"""

from __future__ import annotations

import argparse
import csv
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
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
from PIL import Image, ImageDraw

from vidpipe.definitions import PROCESS_JOB_NAME, build_definitions
from vidpipe.defs.partitions import VIDEOS, upload_tags
from vidpipe.inbox import InboxCursor, scan_inbox
from vidpipe.media.encoder import build_encode_command, run_encode
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key
from vidpipe.media.ladder import plan_ladder
from vidpipe.media.probe import probe
from vidpipe.media.thumbnail import poster_command
from vidpipe.media.tools import run_tool

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
RESULTS = HERE / "results"
SSIM_FLOOR = 0.95


def process_video_job() -> dg.JobDefinition:
    """The job the upload sensor runs, loadable by Dagster's step processes."""
    return build_definitions().resolve_job_def(PROCESS_JOB_NAME)


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


def vidpipe_run(clip: Path, storage: Path) -> tuple[float, dict]:
    """One process_video run as the daemon launches it; seconds from run start to manifest materialized."""
    os.environ["VIDPIPE_STORAGE"] = str(storage)
    os.environ["VIDPIPE_INBOX"] = str(clip.parent)
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-") as home, dg.instance_for_test(temp_dir=home) as instance:
        key = partition_key(clip.name, sha256_file(clip))
        instance.add_dynamic_partitions(VIDEOS, [key])
        result = dg.execute_job(
            dg.reconstructable(process_video_job),
            instance=instance,
            tags={"dagster/partition": key, **upload_tags(clip.name)},
        )
        assert result.success, "vidpipe run failed"
        events = instance.all_logs(result.run_id)
        started = next(e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.RUN_START)
        manifest_done = next(
            e.timestamp
            for e in events
            if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
            and e.dagster_event is not None
            and e.dagster_event.asset_key == dg.AssetKey("video_manifest")
        )
    manifest = json.loads((storage / key / "manifest.json").read_text())
    return manifest_done - started, manifest


def raw_ffmpeg(manifest: dict, source: Path, scratch: Path) -> float:
    """The exact command from the manifest (outputs redirected to scratch), then the thumbnail."""
    scratch.mkdir(parents=True, exist_ok=True)
    argv = [arg if not arg.endswith((".mp4", ".webm", ".m4a")) or arg == str(source) else str(scratch / Path(arg).name)
            for arg in manifest["ffmpeg"]["argv"]]  # fmt: skip
    info = probe(source)
    return timed_command(argv) + timed_command(poster_command(source, info))


def classic_pipeline(source: Path, scratch: Path) -> float:
    """The queue-per-task design: one ffmpeg process per output, one after another, same settings."""
    scratch.mkdir(parents=True, exist_ok=True)
    info = probe(source)
    started = time.perf_counter()
    for plan in plan_ladder(info).renditions:
        run_encode(build_encode_command(source, info, [plan], scratch), info, timeout=3600)
    run_tool(poster_command(source, info), timeout=60)
    return time.perf_counter() - started


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
    vidpipe_times, raw_times, classic_times = [], [], []
    manifest: dict[str, Any] = {}
    storage = WORK / "s1-storage"
    for _ in range(repeat):
        shutil.rmtree(storage, ignore_errors=True)
        elapsed, manifest = vidpipe_run(clip, storage)
        vidpipe_times.append(elapsed)
        raw_times.append(raw_ffmpeg(manifest, storage / manifest["video"] / "source.mp4", WORK / "s1-raw"))
        classic_times.append(classic_pipeline(clip, WORK / "s3-classic"))
    rows = [
        row("S1", "vidpipe run (run start → manifest) vs raw ffmpeg", vidpipe_times, raw_times, "≤", 1.10),
        row("S3", "classic one-process-per-output vs vidpipe (speed-up)", classic_times, vidpipe_times, "≥", 1.5),
    ]
    video_dir = storage / manifest["video"]
    for rendition in manifest["renditions"]:
        if rendition["width"]:
            value = ssim(video_dir / rendition["path"], clip, rendition["width"], rendition["height"])
            rows.append({"scenario": "SSIM", "what": rendition["name"], "value": round(value, 4),
                         "target": f"≥ {SSIM_FLOOR}", "met": value >= SSIM_FLOOR})  # fmt: skip
    return rows


# --- S2 / S4: uploads dropped into the inbox of a running daemon ---


@contextmanager
def running_daemon():
    """A real dagster-daemon on a fresh instance (default settings), ready once the sensor has ticked."""
    home = Path(tempfile.mkdtemp(prefix="vidpipe-bench-daemon-"))
    inbox, storage = home / "inbox", home / "storage"
    inbox.mkdir()
    (home / "dagster.yaml").symlink_to(REPO / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIDPIPE_INBOX": str(inbox), "VIDPIPE_STORAGE": str(storage)}
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
            yield instance, inbox
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


def drop_and_wait(instance: dg.DagsterInstance, inbox: Path, clips: list[Path]) -> float:
    """Seconds from the first file appearing in the inbox to the last manifest materialized."""
    dropped = time.time()
    for clip in clips:
        shutil.copyfile(clip, inbox / f".{clip.name}.part")
        os.rename(inbox / f".{clip.name}.part", inbox / clip.name)
    manifest = dg.AssetKey("video_manifest")
    wait_for(lambda: len(instance.get_materialized_partitions(manifest)) == len(clips), what="every manifest",
             seconds=600 + 120 * len(clips))  # fmt: skip
    last = max(
        record.event_log_entry.timestamp
        for record in instance.fetch_materializations(manifest, limit=len(clips) + 1).records
    )
    return last - dropped


def raw_loop(clips: list[Path], scratch: Path) -> float:
    """The same encodes and thumbnails as plain ffmpeg commands, one video after another."""
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for clip in clips:
        info = probe(clip)
        run_encode(build_encode_command(clip, info, list(plan_ladder(info).renditions), scratch),
                   info, timeout=3600)  # fmt: skip
        run_tool(poster_command(clip, info), timeout=60)
    return time.perf_counter() - started


def scenario_drop_to_done(repeat: int, seconds: float) -> list[dict]:
    clip = make_input("one-video", "1920x1080", seconds)
    vidpipe_times, raw_times = [], []
    for _ in range(repeat):
        with running_daemon() as (instance, inbox):
            vidpipe_times.append(drop_and_wait(instance, inbox, [clip]))
        raw_times.append(raw_loop([clip], WORK / "s2-raw"))
    return [row("S2", "drop in inbox → manifest, daemon running, vs raw ffmpeg", vidpipe_times, raw_times, "≤", 1.30)]


def scenario_many_small(count: int = 40) -> list[dict]:
    clips = [make_input(f"small-{i:02d}", "854x480", 5, seed=i) for i in range(count)]
    with running_daemon() as (instance, inbox):
        vidpipe_time = drop_and_wait(instance, inbox, clips)
    raw_time = raw_loop(clips, WORK / "s4-raw")
    # Throughput ratio = (clips / vidpipe time) / (clips / raw time).
    return [row("S4", f"{count} clips of 5 s 480p dropped at once: throughput vs a raw loop", [raw_time],
                [vidpipe_time], "≥", 0.75)]  # fmt: skip


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


ENCODE_STEP = """
import sys; from pathlib import Path
from vidpipe.media.encoder import build_encode_command, run_encode
from vidpipe.media.ladder import plan_ladder
from vidpipe.media.probe import probe
src, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
info = probe(src)
run_encode(build_encode_command(src, info, list(plan_ladder(info).renditions), out), info, timeout=3600)
"""
THUMBNAIL_STEP = """
import sys; from pathlib import Path
from vidpipe.media.probe import probe
from vidpipe.media.thumbnail import read_poster, write_thumbnails
src, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
write_thumbnails(read_poster(src, probe(src)), out)
"""


MEASURE_PEAK_RSS = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)"
)


def peak_rss(step_code: str, *args: str) -> int:
    """Peak RSS in bytes of a step and the ffmpeg it runs, measured in a fresh interpreter of its own."""
    argv = [sys.executable, "-c", MEASURE_PEAK_RSS, sys.executable, "-c", step_code, *args]
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def scenario_memory(seconds: float) -> list[dict]:
    clip = make_input("memory", "3840x2160", seconds)
    encode = peak_rss(ENCODE_STEP, str(clip), str(WORK / "s6-out"))
    thumb = peak_rss(THUMBNAIL_STEP, str(clip), str(WORK / "s6-thumbs"))
    limit = 1.5 * 2**30
    return [
        {"scenario": "S6", "what": "peak RSS of the encode step on 4K (MiB)", "value": round(encode / 2**20),
         "target": "≤ 1536", "met": encode <= limit},
        {"scenario": "S6", "what": "peak RSS of the thumbnail step on 4K (MiB)", "value": round(thumb / 2**20),
         "target": "report", "met": True},
    ]  # fmt: skip


# --- reporting ---


def row(scenario, what, measured, baseline, sense, target, absolute_target=None) -> dict:
    """A ratio of medians; with ``absolute_target`` the measured median itself is judged."""
    m, b = statistics.median(measured), statistics.median(baseline)
    ratio = m / b
    judged = m if absolute_target else ratio
    met = judged <= target if sense == "≤" else judged >= target
    return {
        "scenario": scenario, "what": what, "value": round(ratio, 3), "median_s": round(m, 3),
        "baseline_median_s": round(b, 3), "runs": [round(x, 3) for x in measured],
        "baseline_runs": [round(x, 3) for x in baseline],
        "target": f"{sense} {target}" + (f" {absolute_target[0]} (median)" if absolute_target else " (ratio)"),
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


def write_results(rows: list[dict], meta: dict) -> None:
    """Replace the rows of the scenarios just measured; keep the latest rows of the others."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["measured_at"] = meta["when"]
    latest = RESULTS / "latest.json"
    measured = {r["scenario"] for r in rows}
    kept = (
        [r for r in json.loads(latest.read_text())["results"] if r["scenario"] not in measured]
        if latest.exists()
        else []
    )
    rows = sorted(kept + rows, key=lambda r: (r["scenario"] == "SSIM", r["scenario"]))
    latest.write_text(json.dumps({"machine": meta, "results": rows}, indent=2) + "\n")
    with open(RESULTS / "latest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["scenario", "what", "value", "median_s", "baseline_median_s", "target", "met"],
                                extrasaction="ignore")  # fmt: skip
        writer.writeheader()
        writer.writerows(rows)
    chart(rows, RESULTS / "latest.png")


def chart(rows: list[dict], path: Path) -> None:
    """Bars of the timing ratios, with each target marked; drawn with Pillow."""
    ratios = [r for r in rows if "ratio" in r.get("target", "")]
    width, bar_h, left = 900, 40, 360
    image = Image.new("RGB", (width, 60 + bar_h * len(ratios) + 20), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), "vidpipe benchmarks: ratio of medians (bar) and target (line)", fill="black")
    scale = (width - left - 40) / max([r["value"] for r in ratios] + [2.0])
    for i, r in enumerate(ratios):
        y = 50 + i * bar_h
        draw.text((10, y + 8), f"{r['scenario']} {r['what'][:48]}".replace("→", "->"), fill="black")
        draw.rectangle([left, y, left + r["value"] * scale, y + bar_h - 12], fill="#2563eb" if r["met"] else "#dc2626")
        draw.text((left + r["value"] * scale + 5, y + 8), f"{r['value']:.2f}", fill="black")
        target = float(r["target"].split()[1])
        draw.line([left + target * scale, y - 4, left + target * scale, y + bar_h - 8], fill="black", width=2)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30, help="length of the S1/S3 clip")
    parser.add_argument("--small-clips", type=int, default=40, help="how many clips S4 drops at once")
    parser.add_argument("--only", default="S1,S2,S3,S4,S5,S6", help="comma-separated scenarios")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    rows: list[dict] = []
    if chosen & {"S1", "S3"}:
        rows += scenario_one_video(args.repeat, args.seconds)
    if "S2" in chosen:
        rows += scenario_drop_to_done(args.repeat, args.seconds)
    if "S4" in chosen:
        rows += scenario_many_small(args.small_clips)
    if "S5" in chosen:
        rows += scenario_crowded_inbox()
    if "S6" in chosen:
        rows += scenario_memory(min(args.seconds, 10))
    meta = machine()
    write_results(rows, meta)
    print(f"machine: {meta['cpus']} CPUs, {meta['platform']}, {meta['ffmpeg']}, dagster {meta['dagster']}")
    for r in rows:
        detail = f" (median {r['median_s']} s vs {r['baseline_median_s']} s)" if "median_s" in r else ""
        print(f"{r['scenario']:5} {r['what']:62} {r['value']:>9} target {r['target']:<18} "
              f"{'met' if r['met'] else 'MISSED'}{detail}")  # fmt: skip
    print(f"results: {RESULTS / 'latest.json'}, .csv, .png")


if __name__ == "__main__":
    main()
