import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vidpipe.media.encoder import build_encode_command, run_encode
from vidpipe.media.errors import InvalidMediaError, ToolFailedError, ToolKilledError, ToolTimeoutError
from vidpipe.media.ffmpeg_calls import Limits, Tools, run_tool
from vidpipe.media.files import remove_orphaned_temporaries, temporary_sibling
from vidpipe.media.ladder import plan_ladder
from vidpipe.media.probe import probe
from vidpipe_tests import corpus
from vidpipe_tests.clips import (
    decode_frame,
    frame_count,
    keyframe_times,
    make_clip,
    mean_difference,
    stream,
    top_level_boxes,
)
from vidpipe_tests.harness import wait_until


def encode(source, out_dir, **kwargs):
    info = probe(source)
    plans = list(plan_ladder(info).renditions)
    command = build_encode_command(source, info, plans, out_dir)
    return info, command, run_encode(command, info, **kwargs).outputs


@pytest.fixture(scope="module")
def landscape_encoded(landscape_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("landscape-renditions")
    progress = []
    info, command, outputs = encode(landscape_clip, out, on_progress=progress.append)
    return info, command, outputs, progress


def test_all_rungs_come_out_of_one_ffmpeg_process(landscape_encoded):
    _, command, outputs, _ = landscape_encoded
    assert set(outputs) == {"h264_360p", "h264_240p", "vp9_360p"}
    assert command.argv.count("-i") == 1
    [graph] = [arg for arg in command.argv if "split" in arg]
    # Two sizes: 360p (shared by h264 and vp9) scaled once from the source, 240p from 360p.
    assert graph.count("scale=") == 2
    assert graph.index("scale=640:360") < graph.index("scale=426:240")
    for path in command.temporary_outputs.values():
        assert str(path) in command.argv


def test_every_output_has_the_planned_size_codecs_and_duration(landscape_encoded, landscape_clip):
    _, _, outputs, _ = landscape_encoded
    source_frames = frame_count(landscape_clip)
    expected = {
        "h264_360p": ("h264", "aac", 640, 360),
        "h264_240p": ("h264", "aac", 426, 240),
        "vp9_360p": ("vp9", "opus", 640, 360),
    }
    for name, (vcodec, acodec, width, height) in expected.items():
        video, audio = stream(outputs[name], "video"), stream(outputs[name], "audio")
        assert (video["codec_name"], video["width"], video["height"]) == (vcodec, width, height)
        assert video["pix_fmt"] == "yuv420p"
        assert video.get("sample_aspect_ratio", "1:1") in ("1:1", "0:1")
        assert audio["codec_name"] == acodec and audio["channels"] == 2 and audio["sample_rate"] == "48000"
        assert abs(frame_count(outputs[name]) - source_frames) <= 1, name
    assert stream(outputs["h264_360p"], "video")["profile"] == "High"


def test_keyframes_every_two_seconds_in_every_rung(landscape_encoded):
    _, _, outputs, _ = landscape_encoded
    for name, path in outputs.items():
        assert keyframe_times(path) == pytest.approx([0.0, 2.0, 4.0], abs=0.04), name


def test_mp4_renditions_start_with_the_moov_box(landscape_encoded):
    _, _, outputs, _ = landscape_encoded
    for name in ("h264_360p", "h264_240p"):
        boxes = top_level_boxes(outputs[name])
        assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_progress_is_reported_up_to_the_end(landscape_encoded):
    _, _, _, progress = landscape_encoded
    assert progress[-1].finished and progress[-1].fraction == 1.0
    assert progress[-1].seconds_total == pytest.approx(5.0, abs=0.05)


def test_no_temporary_files_remain(landscape_encoded):
    _, _, outputs, _ = landscape_encoded
    folder = next(iter(outputs.values())).parent
    assert sorted(p.name for p in folder.iterdir()) == ["h264_240p.mp4", "h264_360p.mp4", "vp9_360p.webm"]


def test_silent_source_gives_silent_renditions(silent_clip, tmp_path):
    _, _, outputs = encode(silent_clip, tmp_path)
    assert outputs and all(stream(path, "audio") is None for path in outputs.values())


def test_phone_clip_renditions_are_upright_portrait(phone_clip, tmp_path):
    info, _, outputs = encode(phone_clip, tmp_path)
    # make_clip(rotate=90) gets from ffmpeg 5.1 a display matrix of 90 degrees counter-clockwise.
    assert info.rotation == 270
    assert (stream(outputs["h264_360p"], "video")["width"], stream(outputs["h264_360p"], "video")["height"]) == (
        360,
        640,
    )
    assert "side_data_list" not in stream(outputs["h264_360p"], "video")
    raw = decode_frame(phone_clip, autorotate=False)
    upright = raw.rotate(90, expand=True)  # PIL turns counter-clockwise
    sideways = raw.rotate(-90, expand=True)
    rendition_frame = decode_frame(outputs["h264_360p"])
    assert mean_difference(upright, rendition_frame) < 8
    assert mean_difference(sideways, rendition_frame) > 20


def test_tiny_odd_sized_source_is_encoded_at_its_own_even_size(tiny_clip, tmp_path):
    _, _, outputs = encode(tiny_clip, tmp_path)
    assert set(outputs) == {"h264_240p", "vp9_360p"}
    for path in outputs.values():
        video = stream(path, "video")
        assert (video["width"], video["height"]) == (200, 112)


def test_a_failed_encode_publishes_nothing_and_leaves_no_temporary_files(landscape_clip, tmp_path):
    """ffmpeg fails here before writing a frame; the tests below fail it, or kill it, once it has written."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(landscape_clip.read_bytes()[:40_000])
    info = probe(landscape_clip)
    out = tmp_path / "out"
    out.mkdir()
    command = build_encode_command(broken, info, list(plan_ladder(info).renditions), out)
    with pytest.raises(ToolFailedError) as err:
        run_encode(command, info)
    assert err.value.stderr_tail and "0x" not in err.value.message and "failed:" not in err.value.message
    assert err.value.message.startswith("ffmpeg "), err.value.message
    assert list(out.iterdir()) == []


def test_a_stuck_process_is_killed_at_its_time_limit():
    with pytest.raises(ToolTimeoutError, match=r"longer than 0\.5 s"):
        run_tool(["sleep", "30"], timeout=0.5)


CRASHING_WORKER = """
import sys
from pathlib import Path
from vidpipe.media.encoder import build_encode_command, run_encode
from vidpipe.media.ladder import plan_ladder
from vidpipe.media.probe import probe
source, out = Path(sys.argv[1]), Path(sys.argv[2])
info = probe(source)
command = build_encode_command(source, info, list(plan_ladder(info).renditions), out)
run_encode(command, info)
"""


def ffmpeg_writing_into(folder) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and b"ffmpeg" in cmdline and str(folder).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def files_in(folder) -> dict[str, int]:
    """Name → size of every file in ``folder``, hidden ones included."""
    return {path.name: path.stat().st_size for path in folder.iterdir()}


def test_ffmpeg_killed_while_writing_publishes_nothing(long_clip, tmp_path):
    info = probe(long_clip)
    out = tmp_path / "out"
    out.mkdir()
    command = build_encode_command(long_clip, info, list(plan_ladder(info).renditions), out)
    # -re: ffmpeg reads the 10 s source at its own pace, so it is still writing when it is killed.
    command.argv.insert(command.argv.index("-i"), "-re")
    finals = {path.name for path in command.final_outputs.values()}
    seen: list[dict[str, int]] = []
    killed: list[int] = []

    def kill_once_frames_are_on_disk(progress):
        """Called for each of ffmpeg's progress reports (every 0.5 s), while it runs."""
        seen.append(files_in(out))
        if not killed and max(seen[-1].values(), default=0) > 100_000:
            killed.extend(ffmpeg_writing_into(out))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(ToolKilledError, match="killed by signal 9"):
        run_encode(command, info, on_progress=kill_once_frames_are_on_disk)
    assert len(killed) == 1
    # When it was killed, ffmpeg had created every output and written frames into one at least, and
    # no final name had appeared, in that report or any before.
    assert len(seen[-1]) == len(finals) and max(seen[-1].values()) > 100_000, seen[-1]
    assert not any(finals & set(files) for files in seen), seen
    assert list(out.iterdir()) == []


def tolerating(damaged_fraction: float) -> Tools:
    return Tools(limits=Limits(max_damaged_fraction=damaged_fraction))


@pytest.mark.parametrize(
    "ffmpeg_limit, vidpipe_limit, refusal",
    [(0.0, 0.0, "ffmpeg gave up"), (0.1, 0.005, "1 of 90 frames damaged or lost")],
    ids=["ffmpeg-exits-69-after-writing", "vidpipe-refuses-what-ffmpeg-wrote"],
)
def test_an_encode_refused_after_every_output_was_written_publishes_nothing(
    ffmpeg_limit, vidpipe_limit, refusal, tmp_path
):
    source = corpus.one_bad_nal_unit(tmp_path)  # one frame of 90 lost
    info = probe(source)
    out = tmp_path / "out"
    out.mkdir()
    command = build_encode_command(source, info, list(plan_ladder(info).renditions), out, tolerating(ffmpeg_limit))
    finals = {path.name for path in command.final_outputs.values()}
    seen: list[tuple[bool, dict[str, int]]] = []
    with pytest.raises(InvalidMediaError, match=f"corrupt H.264 data: .*{refusal}"):
        run_encode(
            command,
            info,
            tolerating(vidpipe_limit),
            on_progress=lambda progress: seen.append((progress.finished, files_in(out))),
        )
    # ffmpeg's last report ("progress=end") came once every output was written; no final name had
    # appeared, in that report or any before.
    finished, files = seen[-1]
    assert finished and len(files) == len(finals) and min(files.values()) > 50_000, files
    assert not any(finals & set(files) for _, files in seen), seen
    assert list(out.iterdir()) == []


def test_a_worker_killed_mid_encode_leaves_no_output_and_the_rerun_completes(clips, tmp_path):
    long_clip = make_clip(clips / "long.mp4", seconds=20)
    out = tmp_path / "renditions"
    out.mkdir()
    worker = subprocess.Popen([sys.executable, "-c", CRASHING_WORKER, str(long_clip), str(out)])
    wait_until(
        lambda: any(p.stat().st_size > 0 for p in out.glob(".*.partial.*")),
        30,
        "the encode to write",
        poll_seconds=0.05,
    )
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    # ffmpeg dies with its worker rather than finishing an encode nobody will publish.
    wait_until(lambda: not ffmpeg_writing_into(out), 2, "ffmpeg to die with its worker", poll_seconds=0.05)

    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
    orphans = sorted(out.iterdir())
    assert orphans and sorted(remove_orphaned_temporaries(out)) == orphans
    _, _, outputs = encode(long_clip, out)
    assert sorted(p.name for p in out.iterdir()) == ["h264_240p.mp4", "h264_360p.mp4", "vp9_360p.webm"]
    assert abs(frame_count(outputs["vp9_360p"]) - frame_count(long_clip)) <= 1


def test_temporary_files_of_a_live_writer_are_left_alone(tmp_path):
    mine = temporary_sibling(tmp_path / "h264_720p.mp4")
    mine.write_bytes(b"in progress")
    assert remove_orphaned_temporaries(tmp_path) == [] and mine.exists()


def test_a_killed_process_is_a_retryable_failure():
    # The child kills itself with SIGKILL, as the kernel's OOM killer or an operator would.
    with pytest.raises(ToolKilledError, match="killed by signal 9") as err:
        run_tool(["sh", "-c", "kill -9 $$"], timeout=10)
    assert err.value.retryable


def test_ffmpeg_failures_are_said_in_plain_words_and_keep_ffmpeg_own_words(tmp_path):
    undecodable = corpus.vvc_mp4(tmp_path)
    with pytest.raises(ToolFailedError) as err:
        run_tool(["ffmpeg", "-v", "error", "-i", str(undecodable), "-f", "null", "-"], timeout=30)
    assert err.value.message == "ffmpeg found a stream it has no decoder for"
    assert err.value.stderr_tail == ["Decoder (codec none) not found for input stream #0:0"]
    with pytest.raises(ToolFailedError) as err:
        run_tool(["ffmpeg", "-v", "error", "-i", str(tmp_path / "missing.mp4"), "-f", "null", "-"], timeout=30)
    assert err.value.message == "ffmpeg stopped with an error (exit status 1); its last messages are in the details"
