"""Each barrier of the upload gate on its own: with any one of them gone, a test here fails.

The text sniffer stops reading at the first NUL byte, so a playlist with one appended reaches
ffprobe; the demuxer allow-list must then refuse it. A file name that reads as a protocol URL
(``concat:segment.ts``) must still be opened as a local file only. A file whose header claims a
small picture may carry larger frames; the decoder's ``-max_pixels`` must refuse those.

Whether ffmpeg opened a file it should not is seen through a named pipe, not through access
times: opening a pipe for reading blocks until a writer comes, so a thread waiting to write sees
every reader.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from vidpipe.media.encoder import build_encode_command, run_encode
from vidpipe.media.errors import InvalidMediaError, ToolFailedError
from vidpipe.media.ffmpeg_calls import Limits, Tools
from vidpipe.media.ladder import plan_ladder
from vidpipe.media.probe import probe, probe_json
from vidpipe.media.thumbnail import read_first_frame
from vidpipe.media.validate import validate_upload
from vidpipe_tests import corpus
from vidpipe_tests.clips import make_clip

SEGMENT = "segment.ts"
"""The file every playlist here names first: a named pipe that records whether ffmpeg opened it."""


class Tripwire:
    """A named pipe that records whether anything opened it for reading while the ``with`` block ran.

    A thread waits to open the write end, which blocks until a reader opens the pipe. A reader
    (ffmpeg) in turn waits for data or end of file, and gets end of file only once the thread,
    having recorded the open, closes its end: so an open by ffmpeg is recorded before ffmpeg can
    exit. On leaving the block the test itself opens the read end, and that open is not recorded.
    """

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path = path
        self.opened = False
        self._block_ended = threading.Event()
        self._writer = threading.Thread(target=self._wait_for_a_reader, daemon=True)

    def _wait_for_a_reader(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        self.opened = not self._block_ended.is_set()
        os.close(fd)

    def __enter__(self):
        self._writer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._block_ended.set()
        reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._writer.join(timeout=10)
        os.close(reader)
        assert not self._writer.is_alive()


def hls_playlist(folder: Path, *, nul: bool) -> Path:
    """A text HLS playlist named like a video, listing the tripwire pipe; ``nul`` appends a comment line with a NUL.

    Only the pipe: ffmpeg's HLS demuxer refuses a whole playlist that lists any file without a media
    extension (such as the corpus's ``secret.txt``), so that entry would hide whether the pipe gets opened.
    """
    return _write(
        folder / "holiday.mp4", f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{SEGMENT}\n#EXT-X-ENDLIST\n", nul
    )


def concat_list(folder: Path, *, nul: bool) -> Path:
    """An ffmpeg concat list named like a video, listing the tripwire pipe; ``nul`` appends a comment line with a NUL."""
    return _write(folder / "party.mp4", f"ffconcat version 1.0\nfile '{SEGMENT}'\n", nul)


def _write(path: Path, text: str, nul: bool) -> Path:
    path.write_bytes(text.encode() + (b"#\0\n" if nul else b""))
    return path


def not_on_whitelist(demuxer: str, stderr_tail: list[str]) -> bool:
    """Whether ffprobe said it refused ``demuxer`` for not being on the ``-format_whitelist``."""
    return any(re.match(rf"\[{demuxer} @ 0x[0-9a-f]+\] Format not on whitelist", line) for line in stderr_tail)


@pytest.mark.parametrize(
    "make, reason",
    [
        (corpus.hls_playlist, "not a video: the file is an HLS playlist"),
        (corpus.concat_list, "not a video: the file is an ffmpeg concat list"),
        (corpus.text_as_mov, "not a video: the file is text"),
    ],
    ids=["hls_playlist", "concat_list", "text_as_mov"],
)
def test_the_sniffer_alone_refuses_text_before_any_ffprobe_runs(make, reason, tmp_path):
    """The allow-list refuses these files in the same words; with no ffprobe to run, only the sniffer can."""
    upload = make(tmp_path)
    with pytest.raises(InvalidMediaError) as err:
        validate_upload(upload, Tools(ffprobe=str(tmp_path / "no-such-ffprobe")))
    assert err.value.message == reason


@pytest.mark.parametrize(
    "make, demuxer, what",
    [(hls_playlist, "hls", "an HLS playlist"), (concat_list, "concat", "an ffmpeg concat list")],
    ids=["hls", "concat"],
)
def test_a_nul_padded_playlist_gets_past_the_sniffer_but_is_refused_unopened(make, demuxer, what, tmp_path):
    """The sniffer stops at the NUL, so this is the demuxer allow-list's refusal, in the sniffer's words."""
    upload = make(tmp_path, nul=True)
    with Tripwire(tmp_path / SEGMENT) as tripwire, pytest.raises(InvalidMediaError) as err:
        validate_upload(upload)
    assert err.value.message == f"not a video: the file is {what}"
    assert not_on_whitelist(demuxer, err.value.stderr_tail), err.value.stderr_tail
    assert not tripwire.opened, f"ffprobe opened the {SEGMENT} the playlist names"


@pytest.mark.parametrize(
    "make, make_with_secret, demuxer",
    [(hls_playlist, corpus.hls_playlist, "hls"), (concat_list, corpus.concat_list, "concat")],
    ids=["hls", "concat"],
)
def test_the_probe_alone_refuses_a_playlist_by_its_demuxer_allow_list(make, make_with_secret, demuxer, tmp_path):
    upload = make(tmp_path, nul=False)
    with Tripwire(tmp_path / SEGMENT) as tripwire, pytest.raises(ToolFailedError) as err:
        probe_json(upload)
    assert not err.value.retryable
    assert not_on_whitelist(demuxer, err.value.stderr_tail), err.value.stderr_tail
    assert not tripwire.opened, f"ffprobe opened the {SEGMENT} the playlist names"

    # ``probe`` (for vidpipe's own outputs) reads through the same guards; the corpus playlist names its secret.
    folder = tmp_path / "with-secret"
    folder.mkdir()
    upload = make_with_secret(folder)
    with pytest.raises(InvalidMediaError) as err:
        probe(upload)
    assert err.value.message == "not a readable video: ffprobe could not parse the file"
    assert not_on_whitelist(demuxer, err.value.stderr_tail), err.value.stderr_tail
    assert corpus.SECRET not in str(err.value.context())


def test_a_file_name_that_reads_as_a_protocol_url_is_probed_as_a_local_file(tmp_path, monkeypatch):
    """``concat:segment.ts`` in the working directory is a URL to ffmpeg; ``-protocol_whitelist file`` refuses it."""
    monkeypatch.chdir(tmp_path)
    upload = Path(f"concat:{SEGMENT}")
    upload.write_bytes(b"\0" * 64)  # an upload of that name; ffmpeg reading it as a URL never opens it
    with Tripwire(tmp_path / SEGMENT) as tripwire, pytest.raises(ToolFailedError) as err:
        probe_json(upload)
    assert "Protocol 'concat' not on whitelist 'file'!" in "\n".join(err.value.stderr_tail)
    assert not tripwire.opened, f"ffprobe followed the concat: protocol to {SEGMENT}"


def test_a_file_name_that_reads_as_a_protocol_url_is_encoded_as_a_local_file(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "clip.mp4", size="64x64", seconds=1, audio=False)
    info = probe(clip)
    monkeypatch.chdir(tmp_path)
    source = Path(f"concat:{SEGMENT}")
    source.write_bytes(clip.read_bytes())
    (tmp_path / "out").mkdir()
    command = build_encode_command(source, info, list(plan_ladder(info).renditions), tmp_path / "out")
    with Tripwire(tmp_path / SEGMENT) as tripwire, pytest.raises(ToolFailedError) as err:
        run_encode(command, info)
    assert "Protocol 'concat' not on whitelist 'file'!" in "\n".join(err.value.stderr_tail)
    assert not tripwire.opened, f"ffmpeg followed the concat: protocol to {SEGMENT}"
    assert list((tmp_path / "out").iterdir()) == []


# --- resolution bombs: a header that claims a small picture over frames that decode larger ------------

SMALL, LARGE = (64, 64), (1024, 1024)
LIMITED = Tools(limits=Limits(max_pixels=SMALL[0] * SMALL[1] * 4))
UNLIMITED = Tools(limits=Limits(max_pixels=LARGE[0] * LARGE[1]))
"""Room for the header's 64×64 picture; the 1024×1024 frames are 64 times the size."""


@pytest.fixture(scope="module")
def bitstreams(tmp_path_factory) -> tuple[bytes, bytes]:
    """Raw (Annex B) H.264: 2 s of 64×64 at 10 fps, and one frame of 1024×1024; each starts with its own SPS."""
    folder = tmp_path_factory.mktemp("bitstreams")
    streams = []
    for name, size, frames in (("small", SMALL, 20), ("large", LARGE, 1)):
        path = folder / f"{name}.h264"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate=10",
             "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-f", "h264", str(path)],
            check=True,
        )  # fmt: skip
        streams.append(path.read_bytes())
    return streams[0], streams[1]


def h264_in_matroska(path: Path, *parts: bytes) -> Path:
    """The raw streams one after the other, copied into Matroska without decoding."""
    raw = path.with_suffix(".h264")
    raw.write_bytes(b"".join(parts))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-r", "10", "-i", str(raw), "-c", "copy", str(path)], check=True)
    return path


def frame_sizes(path: Path) -> list[tuple[int, int]]:
    """The size of every frame ffmpeg decodes from ``path`` with no pixel limit."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=width,height", "-of", "csv=p=0",
         str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [(int(w), int(h)) for w, h, *_ in (line.split(",") for line in out.split())]


def test_a_resolution_bomb_that_passes_the_header_check_is_refused_by_the_decoder_pixel_limit(bitstreams, tmp_path):
    small, large = bitstreams
    bomb = h264_in_matroska(tmp_path / "bomb.mkv", small, *[large] * 5)
    info = validate_upload(bomb, LIMITED)
    assert (info.width, info.height) == SMALL, "the header check would stop this file: it is no test of the decoder"
    assert frame_sizes(bomb) == [SMALL] * 20 + [LARGE] * 5
    plans = list(plan_ladder(info).renditions)

    (tmp_path / "limited").mkdir()
    command = build_encode_command(bomb, info, plans, tmp_path / "limited", LIMITED)
    with pytest.raises(InvalidMediaError) as err:
        run_encode(command, info, LIMITED)
    assert re.fullmatch(
        r"corrupt H\.264 data: ffmpeg gave up \(decoded with \d+ errors, 5 frames lost\)", err.value.message
    )
    assert list((tmp_path / "limited").iterdir()) == []

    # The same encode with a limit above the large frames decodes them all: the limit is what refused them.
    (tmp_path / "unlimited").mkdir()
    command = build_encode_command(bomb, info, plans, tmp_path / "unlimited", UNLIMITED)
    encoded = run_encode(command, info, UNLIMITED)
    assert encoded.decoding.clean, encoded.decoding.summary()
    assert set(encoded.outputs) == {plan.rung.name for plan in plans}


def test_the_thumbnail_skips_a_frame_over_the_pixel_limit_that_the_header_hid(bitstreams, tmp_path):
    small, large = bitstreams
    bomb = h264_in_matroska(tmp_path / "large-first.mkv", large, small)
    info = validate_upload(bomb, LIMITED)
    assert (info.width, info.height) == SMALL, "the header check would stop this file: it is no test of the decoder"
    assert frame_sizes(bomb)[:2] == [LARGE, SMALL]

    assert read_first_frame(bomb, info, LIMITED).size == SMALL
    # With a limit above the large frame, the first frame, large, is the one read: the limit is what skipped it.
    assert read_first_frame(bomb, info, UNLIMITED).size == LARGE


def test_the_gate_probe_decodes_no_frame_over_the_pixel_limit(bitstreams, tmp_path):
    """ffprobe decodes a few frames to fill in what the header lacks, before the gate has checked any size.

    Measured once: an 8192×8192 first frame behind a 64×64 header (a 2.4 MB file) took the gate's ffprobe
    from 54 MB to 212 MB of memory, and the gate then accepted the file as 64×64.
    """
    small, large = bitstreams
    bomb = h264_in_matroska(tmp_path / "large-first.mkv", large, small)
    log = tmp_path / "ffprobe.log"
    ffprobe = tmp_path / "ffprobe"
    ffprobe.write_text(f'#!/bin/sh\nexec ffprobe "$@" -loglevel debug 2>>{shlex.quote(str(log))}\n')
    ffprobe.chmod(0o755)
    with contextlib.suppress(InvalidMediaError):
        validate_upload(bomb, replace(LIMITED, ffprobe=str(ffprobe)))
    if f"Reinit context to {LARGE[0]}x{LARGE[1]}" not in log.read_text():
        pytest.fail("the probe's decoder never met the large frame: this is no test of its pixel limit")
    assert f"Picture size {LARGE[0]}x{LARGE[1]} exceeds specified max pixel count" in log.read_text()
