"""Generators for broken, hostile and odd uploads. Nothing binary is kept in the repository."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from vidpipe_tests.clips import make_clip

SECRET = "VIDPIPE-SECRET-7f3a9c"


def _lavfi(path: Path, video: str, *output_args: str, audio: str | None = None) -> Path:
    argv = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video]
    if audio:
        argv += ["-f", "lavfi", "-i", audio]
    subprocess.run([*argv, *output_args, str(path)], check=True)
    return path


def _file(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def secret_file(folder: Path) -> Path:
    return _file(folder / "secret.txt", f"{SECRET}\n")


def hls_playlist(folder: Path) -> Path:
    """A text HLS playlist named like a video, listing a local secret as its only segment."""
    secret = secret_file(folder)
    return _file(folder / "holiday.mp4", f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{secret}\n#EXT-X-ENDLIST\n")


def concat_list(folder: Path) -> Path:
    secret = secret_file(folder)
    return _file(folder / "party.mp4", f"ffconcat version 1.0\nfile '{secret}'\nfile 'secret.txt'\n")


def y4m_bomb(folder: Path) -> Path:
    """A 60-byte y4m file whose header claims 16000×16000 pixels."""
    return _file(folder / "bomb.y4m", b"YUV4MPEG2 W16000 H16000 F30:1 Ip A1:1 C420jpeg\nFRAME\n")


def truncated_mp4(folder: Path) -> Path:
    """Index first (faststart), then cut short: the header still promises the whole clip."""
    whole = _lavfi(
        folder / "whole-faststart.mp4", "testsrc2=size=320x240:rate=30:duration=3",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
    )  # fmt: skip
    return _file(folder / "cut.mp4", whole.read_bytes()[: whole.stat().st_size // 4])


def mp4_without_moov(folder: Path) -> Path:
    """An MP4 whose index comes last, cut before it: what an interrupted phone upload looks like."""
    whole = make_clip(folder / "whole.mp4", size="320x240", seconds=2)
    data = whole.read_bytes()
    return _file(folder / "no-moov.mp4", data[: data.rfind(b"moov") - 4])


def flipped_bytes(folder: Path) -> Path:
    """A valid header over a bitstream with every 97th byte of its second half inverted."""
    whole = truncated_mp4(folder).with_name("whole-faststart.mp4")
    data = bytearray(whole.read_bytes())
    for offset in range(len(data) // 2, len(data) - 64, 97):
        data[offset] ^= 0xFF
    return _file(folder / "flipped.mp4", bytes(data))


def zero_bytes(folder: Path) -> Path:
    return _file(folder / "empty.mp4", b"")


def text_as_mov(folder: Path) -> Path:
    return _file(folder / "notes.mov", "Meeting notes\n- bring snacks\n")


def png_as_mp4(folder: Path) -> Path:
    return _lavfi(folder / "photo.mp4", "testsrc2=size=64x64", "-frames:v", "1", "-f", "image2", "-c:v", "png")


def lying_duration(folder: Path, claimed_seconds: float = 3 * 3600) -> Path:
    """30 frames in Matroska whose header claims ``claimed_seconds``."""
    path = _lavfi(
        folder / "liar.mkv", "testsrc2=size=64x64:rate=30", "-frames:v", "30", "-c:v", "libx264", "-pix_fmt", "yuv420p"
    )
    data = bytearray(path.read_bytes())
    duration = data.find(b"\x44\x89\x88")  # Segment Info → Duration, an 8-byte float in milliseconds
    data[duration + 3 : duration + 11] = struct.pack(">d", claimed_seconds * 1000)
    path.write_bytes(bytes(data))
    return path


def audio_only(folder: Path) -> Path:
    return _lavfi(folder / "voice-memo.m4a", "sine=frequency=330:duration=2", "-c:a", "aac")


def variable_frame_rate(folder: Path) -> Path:
    """2 s with audio: the first second at 30 fps, the second at 15 fps, timestamps kept as they are."""
    return _lavfi(
        folder / "vfr.mp4", "testsrc2=size=320x240:rate=30:duration=2",
        "-vf", "select='lt(t\\,1)+not(mod(n\\,2))'", "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        "-c:a", "aac",
        audio="sine=duration=2:sample_rate=48000",
    )  # fmt: skip


def interlaced(folder: Path) -> Path:
    """Top-field-first interlaced H.264, 30 frames (60 fields) per second."""
    return _lavfi(
        folder / "interlaced.mp4", "testsrc2=size=320x240:rate=60:duration=1",
        "-vf", "tinterlace=mode=interleave_top,setfield=tff", "-flags", "+ilme+ildct", "-c:v", "libx264",
        "-x264-params", "tff=1", "-pix_fmt", "yuv420p",
    )  # fmt: skip


def ten_bit(folder: Path, transfer: str | None = None) -> Path:
    """10-bit H.264; with ``transfer`` (smpte2084 = PQ, arib-std-b67 = HLG) tagged as BT.2020 HDR."""
    tags = ["-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc"] if transfer else []
    return _lavfi(
        folder / f"ten-bit-{transfer or 'sdr'}.mp4", "testsrc2=size=320x240:rate=30:duration=1",
        "-c:v", "libx264", "-pix_fmt", "yuv420p10le", *tags,
    )  # fmt: skip


def two_audio_tracks(folder: Path) -> Path:
    """Two audio tracks; the second (2 s long, the first only 1 s) is marked default."""
    path = folder / "two-tracks.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-f", "lavfi", "-i", "sine=frequency=880:duration=2",
         "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-disposition:a:0", "0", "-disposition:a:1", "default", str(path)],
        check=True,
    )  # fmt: skip
    return path


def two_frames(folder: Path) -> Path:
    return _lavfi(
        folder / "two-frames.mp4",
        "testsrc2=size=320x240:rate=30",
        "-frames:v",
        "2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
    )


def two_by_two(folder: Path) -> Path:
    return make_clip(folder / "2x2.mp4", size="2x2", seconds=1, audio=False, pix_fmt="yuv444p")


def _four_seconds(folder: Path) -> Path:
    return _lavfi(
        folder / "four-seconds.mp4", "testsrc2=size=320x240:rate=30:duration=4",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
        audio="sine=duration=4:sample_rate=48000",
    )  # fmt: skip


def edit_list(folder: Path) -> tuple[Path, Path]:
    """The original and a copy cut at 1 s without re-encoding: an MP4 edit list hides the first second."""
    original = _four_seconds(folder)
    path = folder / "edit-list.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-ss", "1", "-i", str(original), "-c", "copy", str(path)], check=True
    )
    return original, path


def negative_timestamps(folder: Path) -> Path:
    """Matroska whose timestamps start half a second below zero."""
    path = folder / "negative.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(_four_seconds(folder)), "-c", "copy", "-output_ts_offset", "-0.5",
         "-avoid_negative_ts", "disabled", str(path)],
        check=True,
    )  # fmt: skip
    return path


def subtitles_only(folder: Path) -> Path:
    """A real Matroska file holding nothing but a subtitle track."""
    srt = folder / "captions.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    path = folder / "captions.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(srt), "-c:s", "srt", str(path)], check=True)
    return path


# --- ordinary files from real cameras and tools that headers describe oddly -------------------


def millisecond_flv(folder: Path) -> Path:
    """FLV with millisecond timestamps: ffprobe reports an average of 1000 frames per second."""
    return _lavfi(
        folder / "stream.flv", "testsrc2=size=320x240:rate=60:duration=1",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-fps_mode", "vfr", "-r", "1000", "-c:a", "aac",
        audio="sine=duration=1",
    )  # fmt: skip


def fragmented_mp4_of_unknown_duration(folder: Path) -> Path:
    """1 s of fragmented MP4 whose track header says 2**32 - 1 ticks, a live packager's "unknown": 39 hours."""
    path = _lavfi(
        folder / "live.mp4", "testsrc2=size=320x240:rate=30:duration=1",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-video_track_timescale", "30000",
        "-movflags", "frag_keyframe+empty_moov",
        audio="sine=duration=1",
    )  # fmt: skip
    data = bytearray(path.read_bytes())
    media_header = data.find(b"mdhd")  # the video track's: version 0, then 4 bytes each of flags…timescale
    data[media_header + 20 : media_header + 24] = struct.pack(">I", 0xFFFFFFFF)
    return _file(path, bytes(data))


def few_frames_ffv1(folder: Path) -> Path:
    """Three lossless frames over 0.7 s in Matroska, whose track says 30 frames per second."""
    return _lavfi(
        folder / "lossless.mkv", "testsrc2=size=320x240:rate=3:duration=1",
        "-c:v", "ffv1", "-r", "30", "-fps_mode", "passthrough",
    )  # fmt: skip


def truncated_mkv(folder: Path) -> Path:
    """A Matroska upload cut at a quarter: its header still says 3 s."""
    whole = _lavfi(folder / "whole.mkv", "testsrc2=size=320x240:rate=30:duration=3", "-c:v", "libx264")
    return _file(folder / "cut.mkv", whole.read_bytes()[: whole.stat().st_size // 4])


def truncated_audiobook(folder: Path) -> Path:
    """An AAC audiobook (index first) cut at a quarter."""
    whole = _lavfi(folder / "book.m4b", "sine=duration=4", "-c:a", "aac", "-movflags", "+faststart")
    return _file(folder / "cut.m4b", whole.read_bytes()[: whole.stat().st_size // 4])


def vvc_mp4(folder: Path) -> Path:
    """An MP4 whose video is H.266/VVC (sample entry ``vvc1``), which this ffmpeg cannot decode."""
    path = make_clip(folder / "h266.mp4", size="320x240", seconds=1, audio=False)
    data = bytearray(path.read_bytes())
    entry = data.find(b"avc1", data.find(b"stsd"))
    data[entry : entry + 4] = b"vvc1"
    return _file(path, bytes(data))


def undecodable_audio(folder: Path) -> Path:
    """Matroska with good video and an audio track in a format no decoder knows (``A_ZZZ``)."""
    path = make_clip(folder / "odd-audio.mkv", size="320x240", seconds=1)
    data = bytearray(path.read_bytes())
    codec = data.find(b"A_AAC")
    data[codec : codec + 5] = b"A_ZZZ"
    return _file(path, bytes(data))


def _packet_offsets(path: Path, streams: str) -> list[int]:
    """Where each packet of ``streams`` (an ffprobe stream specifier) starts in the file."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", streams, "-show_entries", "packet=pos", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [int(line) for line in out.split()]


def one_bad_nal_unit(folder: Path) -> Path:
    """3 s of H.264 in MP4 whose 46th frame's NAL length field is garbage: "Error splitting the input
    into NAL units" for that frame; every other frame decodes."""
    path = make_clip(folder / "one-bad-unit.mp4", size="320x240", seconds=3)
    data = bytearray(path.read_bytes())
    offset = _packet_offsets(path, "v")[45]
    data[offset : offset + 4] = b"\x7f\xff\xff\xff"
    return _file(path, bytes(data))


def camera_avi_with_a_damaged_mp3_frame(folder: Path) -> Path:
    """2 s of 256×144 H.264 and 44.1 kHz MP3 in AVI, as small cameras write, one MP3 frame's header zeroed."""
    path = _lavfi(
        folder / "camera.avi", "testsrc2=size=256x144:rate=25:duration=2",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "libmp3lame", "-ar", "44100",
        audio="sine=duration=2:sample_rate=44100",
    )  # fmt: skip
    data = bytearray(path.read_bytes())
    offset = _packet_offsets(path, "a")[40]
    data[offset : offset + 4] = bytes(4)
    return _file(path, bytes(data))
