"""A small mutation check (not part of the suite): does each test catch the bug it claims to guard?

For each mutation below, copies ``vidpipe/``, ``vidpipe_tests/`` and ``pyproject.toml`` into a
scratch folder, makes one edit (which must match exactly once), runs the named tests there and
reports CAUGHT (they failed) or MISSED. Run from the project root:

    .venv/bin/python vidpipe_tests/mutation_check.py            # every mutation, ~3 min on 2 cores
    .venv/bin/python vidpipe_tests/mutation_check.py sniff_off  # one
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (file, text, replacement, pytest arguments)
MUTATIONS = {
    "sniff_off": (
        "vidpipe/media/validate.py", "    sniff(path)\n    try:", "    try:",
        ["vidpipe_tests/media/test_barriers.py", "-k", "sniffer"],
    ),
    "no_demuxer_allow_list": (
        "vidpipe/media/ffmpeg_calls.py",
        'INPUT_GUARDS = ("-protocol_whitelist", "file", "-format_whitelist", ",".join(ALLOWED_DEMUXERS))',
        'INPUT_GUARDS = ("-protocol_whitelist", "file")',
        ["vidpipe_tests/media/test_barriers.py"],
    ),
    "no_protocol_whitelist_in_probe": (
        "vidpipe/media/ffmpeg_calls.py",
        'INPUT_GUARDS = ("-protocol_whitelist", "file", "-format_whitelist", ",".join(ALLOWED_DEMUXERS))',
        'INPUT_GUARDS = ("-format_whitelist", ",".join(ALLOWED_DEMUXERS))',
        ["vidpipe_tests/media/test_barriers.py", "-k", "protocol"],
    ),
    "no_pixel_limit_in_decoders": (
        "vidpipe/media/ffmpeg_calls.py", "            max_pixels=self.limits.max_pixels,\n", "",
        ["vidpipe_tests/media/test_barriers.py", "-k", "bomb or thumbnail"],
    ),
    "no_pixel_limit_in_probe": (
        "vidpipe/media/ffmpeg_calls.py", '*INPUT_GUARDS, "-max_pixels", str(self.limits.max_pixels),', "*INPUT_GUARDS,",
        ["vidpipe_tests/media/test_barriers.py", "-k", "gate_probe"],
    ),
    "tool_outlives_worker": (
        "vidpipe/media/ffmpeg_calls.py", 'DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--")',
        "DIE_WITH_PARENT = ()", ["vidpipe_tests/media/test_ffmpeg_calls.py"],
    ),
    "no_deinterlace": (
        "vidpipe/media/encoder.py", 'video = video.filter("bwdif", mode="send_frame", parity="auto", deint="all")',
        "pass", ["vidpipe_tests/media/test_odd_inputs.py", "-k", "interlaced"],
    ),
    "no_tone_map": (
        "vidpipe/media/encoder.py", "    if info.is_hdr:\n        video = (", "    if False:\n        video = (",
        ["vidpipe_tests/media/test_odd_inputs.py", "-k", "hdr"],
    ),
    "hdr_bt601_weights": (
        "vidpipe/media/encoder.py", '{"out_color_matrix": "bt709", "out_range": "tv"} if info.is_hdr and index == 0 else {}',
        "{}", ["vidpipe_tests/media/test_odd_inputs.py", "-k", "bt709_matrix"],
    ),
    "ffmpeg_writes_final_names": (
        "vidpipe/media/encoder.py", "temporary[plan.rung.name] = temporary_sibling(final[plan.rung.name])",
        "temporary[plan.rung.name] = final[plan.rung.name]",
        ["vidpipe_tests/media/test_encoder.py", "-k", "killed_while or refused_after"],
    ),
    "write_in_place": (
        "vidpipe/media/files.py", "        temporary.write_bytes(data)\n        publish(temporary, final)",
        "        final.write_bytes(data)", ["vidpipe_tests/media/test_files.py"],
    ),
    "rotation_sign": (
        "vidpipe/media/probe.py", 'return _snap(-float(side_data["rotation"]))',
        'return _snap(float(side_data["rotation"]))', ["vidpipe_tests/media/test_odd_inputs.py", "-k", "rotation"],
    ),
    "no_damage_limit": (
        "vidpipe/media/encoder.py", "if decoding.bad_fraction > limit:", "if False:",
        ["vidpipe_tests/media/test_hostile.py", "-k", "corrupt"],
    ),
    "truncation_threshold_moved": (
        "vidpipe/media/validate.py", "content.packets < 0.9 * indexed - 2", "content.packets < 0.9 * indexed - 1",
        ["vidpipe_tests/media/test_real_world.py", "-k", "ninety_percent"],
    ),
    "settle_by_mtime": (
        "vidpipe/inbox.py", "Seen(info.st_ctime_ns, str(info.st_ctime_ns)", "Seen(info.st_mtime_ns, str(info.st_mtime_ns)",
        ["vidpipe_tests/test_inbox.py", "-k", "ctime"],
    ),
    "s3_overwrite_unseen": (
        "vidpipe/inbox.py", 'version = f"{changed}:{item[\'Size\']}:{etag}"', 'version = f"{changed}"',
        ["vidpipe_tests/defs/test_s3_inbox.py", "-k", "directly_under"],
    ),
    "watermark_passes_multipart": (
        "vidpipe/inbox.py", "    if unfinished_since_ns is not None:", "    if False:",
        ["vidpipe_tests/defs/test_s3_inbox.py", "-k", "multipart"],
    ),
    "s3_publishes_on_failure": (
        "vidpipe/defs/storage/s3.py", "            yield local\n            for path", "            try:\n                yield local\n            finally:\n              for path",
        ["vidpipe_tests/defs/test_storage.py", "-k", "appear_only"],
    ),
    "rejected_partition_kept": (
        "vidpipe/defs/sensors.py", "        withdraw_partition(context.instance, video)\n", "",
        ["vidpipe_tests/defs/test_rejections.py", "-k", "graph"],
    ),
}  # fmt: skip


def check(name: str) -> bool:
    """CAUGHT when the tests pass on an unchanged copy and fail on the mutated one."""
    path, text, replacement, tests = MUTATIONS[name]
    baseline = run_tests(tests)
    if baseline.returncode != 0:
        print(f"BROKEN  {name}: the tests fail without the mutation: {last_line(baseline)}", flush=True)
        return False
    mutated = run_tests(tests, (path, text, replacement))
    caught = mutated.returncode != 0
    print(f"{'CAUGHT' if caught else 'MISSED'}  {name}: {last_line(mutated)}", flush=True)
    return caught


def run_tests(tests: list[str], mutation: tuple[str, str, str] | None = None) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        for part in ("vidpipe", "vidpipe_tests", "pyproject.toml"):
            source = ROOT / part
            copy = shutil.copytree if source.is_dir() else shutil.copy
            copy(source, Path(scratch) / part)
        if mutation:
            path, text, replacement = mutation
            target = Path(scratch) / path
            code = target.read_text()
            if code.count(text) != 1:
                raise SystemExit(f"the text to mutate is not in {path} exactly once; update this script")
            target.write_text(code.replace(text, replacement))
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=scratch, env={**os.environ, "PYTHONPATH": scratch}, capture_output=True, text=True, check=False,
        )  # fmt: skip


def last_line(run: subprocess.CompletedProcess[str]) -> str:
    return (run.stdout.strip().splitlines() or ["(no output)"])[-1]


if __name__ == "__main__":
    results = [check(name) for name in (sys.argv[1:] or MUTATIONS)]
    sys.exit(0 if all(results) else 1)
