"""The ``vidpipe`` command as people and scripts run it."""

import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from vidpipe.defs.sensors import rerun_command

VIDPIPE = str(Path(sys.executable).parent / "vidpipe")


def run_vidpipe(*args, env=None, text=True):
    return subprocess.run([VIDPIPE, *args], capture_output=True, text=text, timeout=180, env=env, check=False)


def test_process_writes_every_output_and_prints_the_manifest(tiny_clip, tmp_path):
    done = run_vidpipe("process", str(tiny_clip), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    video_dir = tmp_path / manifest["video"]
    assert json.loads((video_dir / "manifest.json").read_text()) == manifest
    assert [(r["name"], r["width"], r["height"]) for r in manifest["renditions"]] == [
        ("h264_240p", 200, 112),
        ("vp9_360p", 200, 112),
    ]
    assert all((video_dir / r["path"]).is_file() for r in manifest["renditions"] + manifest["thumbnails"])
    assert {(t["format"], t["width"]) for t in manifest["thumbnails"]} == {("jpeg", 201), ("webp", 201)}


def test_process_rejects_a_non_video_with_one_line_and_keeps_the_original(tmp_path):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("#EXTM3U\nnot really a video\n")
    done = run_vidpipe("process", str(fake), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "error: holiday.mp4: not a video: the file is an HLS playlist\n"
    assert fake.read_text() == "#EXTM3U\nnot really a video\n"
    [kept] = (tmp_path / "out").iterdir()
    assert (kept / "source.mp4").read_bytes() == fake.read_bytes()
    assert json.loads((kept / "rejection.json").read_text())["reason"] == "not a video: the file is an HLS playlist"


def test_process_reports_a_missing_file(tmp_path):
    done = run_vidpipe("process", str(tmp_path / "nope.mp4"), "--out", str(tmp_path))
    assert (done.returncode, done.stderr) == (1, f"error: no such file: {tmp_path / 'nope.mp4'}\n")


def test_upload_copies_atomically_and_never_overwrites(tiny_clip, tmp_path):
    inbox = tmp_path / "inbox"
    first = run_vidpipe("upload", "--inbox", str(inbox), str(tiny_clip))
    second = run_vidpipe("upload", "--inbox", str(inbox), str(tiny_clip))
    assert first.returncode == second.returncode == 0
    assert [first.stdout.strip(), second.stdout.strip()] == [str(inbox / "tiny.mp4"), str(inbox / "tiny-1.mp4")]
    assert sorted(p.name for p in inbox.iterdir()) == ["tiny-1.mp4", "tiny.mp4"]
    assert (inbox / "tiny-1.mp4").read_bytes() == tiny_clip.read_bytes()


def test_names_that_are_not_utf8_or_very_long_get_one_line_not_a_traceback(tiny_clip, tmp_path):
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9 \xff.mp4")
    shutil.copyfile(tiny_clip, odd)
    done = run_vidpipe("process", odd, "--out", str(tmp_path / "out"), text=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["source"]["name"] == "caf\\xe9 \\xff.mp4"

    long_name = tmp_path / ("l" * 228 + ".mp4")  # 232 bytes: its temporary name would pass 255
    shutil.copyfile(tiny_clip, long_name)
    inbox = tmp_path / "inbox"
    uploaded = run_vidpipe("upload", "--inbox", str(inbox), str(long_name))
    assert (uploaded.returncode, uploaded.stdout.strip()) == (0, str(inbox / long_name.name)), uploaded.stderr

    longest = tmp_path / ("l" * 250 + ".mp4")  # a second copy would be named ...-1.mp4: 256 bytes
    shutil.copyfile(tiny_clip, longest)
    assert run_vidpipe("upload", "--inbox", str(inbox), str(longest)).returncode == 0
    again = run_vidpipe("upload", "--inbox", str(inbox), str(longest))
    assert (again.returncode, again.stdout, again.stderr) == (1, "", f"error: {'l' * 199}…: File name too long\n")

    missing = run_vidpipe("process", odd + b"x", "--out", str(tmp_path), text=False)
    assert (missing.returncode, missing.stderr) == (
        1,
        f"error: no such file: {tmp_path}/caf\\xe9 \\xff.mp4x\n".encode(),
    )


def run_on_terminal(*args) -> tuple[int, str, str]:
    """Run ``vidpipe`` with stderr on a pseudo-terminal, as a person runs it; stdout stays a pipe."""
    controller, terminal = pty.openpty()
    with subprocess.Popen([VIDPIPE, *args], stdout=subprocess.PIPE, stderr=terminal) as proc:
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
        stdout = proc.stdout.read().decode()
    os.close(controller)
    return proc.returncode, stdout, seen.decode(errors="replace")


def test_on_a_terminal_progress_goes_to_stderr_and_stdout_stays_clean(landscape_clip, tmp_path):
    code, stdout, terminal = run_on_terminal("process", str(landscape_clip), "--out", str(tmp_path / "out"))
    assert code == 0, terminal
    assert json.loads(stdout)["renditions"]
    assert re.search(r"encoding landscape\.mp4: \d+% \(\d+ of 5 s at [\d.]+x\)", terminal), terminal
    assert terminal.endswith("\r\n")
    code, stdout, terminal = run_on_terminal("upload", "--inbox", str(tmp_path / "inbox"), str(landscape_clip))
    assert code == 0 and stdout.strip() == str(tmp_path / "inbox" / "landscape.mp4")
    assert re.search(r"uploading landscape\.mp4: \d+% \(\d+ of \d+ MiB\)", terminal), terminal


def test_when_not_on_a_terminal_nothing_but_the_result_is_printed(tiny_clip, tmp_path):
    done = run_vidpipe("process", str(tiny_clip), "--out", str(tmp_path))
    assert done.returncode == 0 and done.stderr == ""
    uploaded = run_vidpipe("upload", "--inbox", str(tmp_path / "inbox"), str(tiny_clip))
    assert uploaded.stderr == "" and uploaded.stdout == f"{tmp_path / 'inbox' / 'tiny.mp4'}\n"


def test_the_rerun_line_of_the_failure_log_runs_as_pasted(tmp_path, monkeypatch):
    """``failed_runs.jsonl``'s command names the venv and the instance: pasted anywhere, it queues the re-run."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(Path(__file__).resolve().parent.parent / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    key = "holiday-0123456789ab"
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("videos", [key])
        line = rerun_command(key)
        monkeypatch.delenv("DAGSTER_HOME")
        done = subprocess.run(["bash", "-c", line], cwd="/", capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        [run] = instance.get_runs()
    assert run.tags["dagster/partition"] == key and "dagster/backfill" in run.tags
    assert run.job_name == "process_video"


def test_rerun_says_what_to_set_when_there_is_no_instance(tmp_path):
    done = run_vidpipe("rerun", "holiday-0123456789ab", env={**os.environ, "DAGSTER_HOME": str(tmp_path / "none")})
    assert (done.returncode, done.stderr) == (
        1,
        (
            f"error: no vidpipe instance in {tmp_path / 'none'}: start vidpipe once (./dev.sh run), "
            "or set DAGSTER_HOME to its folder\n"
        ),
    )
    (tmp_path / "dagster.yaml").write_text("")
    bad = run_vidpipe("rerun", "../etc", env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert (bad.returncode, bad.stderr) == (1, "error: not a video key: ../etc (keys look like holiday-0123456789ab)\n")


def test_catalog_migrate_fills_a_new_catalog_from_storage_and_videos_lists_it(tiny_clip, tmp_path):
    storage = tmp_path / "storage"
    fake = tmp_path / "notes.mov"
    fake.write_text("not a video\n")
    assert run_vidpipe("process", str(tiny_clip), "--out", str(storage)).returncode == 0
    assert run_vidpipe("process", str(fake), "--out", str(storage)).returncode == 1
    env = {**os.environ, "VIDPIPE_STORAGE": str(storage), "VIDPIPE_CATALOG": f"sqlite:///{tmp_path / 'c.sqlite'}"}
    missing = run_vidpipe("videos", env=env)
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"error: the catalog {tmp_path / 'c.sqlite'} does not exist: run `vidpipe catalog migrate` to make it\n"
    )
    made = run_vidpipe("catalog", "migrate", env=env)
    assert made.returncode == 0 and made.stdout.endswith("with the 2 video(s) storage holds\n"), made.stderr
    again = run_vidpipe("catalog", "migrate", env=env)
    assert again.stdout.endswith("is up to date (schema version 0001)\n")
    listed = run_vidpipe("videos", env=env).stdout.splitlines()
    assert len(listed) == 3 and listed[-1] == "2 of 2 video(s)"
    refused = run_vidpipe("videos", "--state", "rejected", env=env).stdout.splitlines()
    assert refused[0].endswith("notes.mov: not a video: the file is text") and refused[-1] == "1 of 1 video(s)"
    page = json.loads(run_vidpipe("videos", "--search", "TINY", "--limit", "1", "--json", env=env).stdout)
    assert [v["name"] for v in page["videos"]] == ["tiny.mp4"] and page["videos"][0]["state"] == "ready"
    rebuilt = run_vidpipe("catalog", "rebuild", env=env)
    assert rebuilt.stdout.endswith("rebuilt the catalog " + str(tmp_path / "c.sqlite") + " from storage: 2 video(s)\n")
