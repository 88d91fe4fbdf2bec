"""The CMAF package (HLS + DASH over one set of segments) made from real renditions by Shaka Packager."""

import subprocess
import xml.etree.ElementTree as ElementTree

import pytest

from vidpipe.media.ladder import KEYFRAME_INTERVAL_SECONDS
from vidpipe.media.packaging import (
    HLS_MASTER,
    StreamInput,
    package_stream,
    packager_command,
    playlist_attributes,
)
from vidpipe.media.probe import probe
from vidpipe_tests.clips import keyframe_times, make_clip
from vidpipe_tests.harness import encode_upload

MPD = "{urn:mpeg:dash:schema:mpd:2011}"
SECONDS = 7
"""Not a multiple of the segment length: the last segment is shorter."""
RUNGS = ("h264_480p", "h264_360p", "h264_240p")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """A 7 s 854x480 upload's H.264 renditions (480p, 360p and 240p: their aspect ratios differ by a
    rounding, which ffmpeg's DASH muxer refuses) packaged into a stream."""
    root = tmp_path_factory.mktemp("packaging")
    clip = make_clip(root / "clip.mp4", size="854x480", seconds=SECONDS)
    _, outputs = encode_upload(clip, root / "renditions", rungs=set(RUNGS))
    audio = {"h264_480p": 96, "h264_360p": 96, "h264_240p": 64}
    inputs = [StreamInput(name, outputs[name], audio_kbps=audio[name]) for name in RUNGS]
    stream = root / "stream"
    stream.mkdir()
    return outputs, stream, package_stream(inputs, stream)


def test_the_master_playlist_carries_what_players_and_apples_spec_need(packaged):
    outputs, folder, package = packaged
    master = (folder / package.hls).read_text()
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in master.splitlines()
    [audio] = [playlist_attributes(line) for line in master.splitlines() if line.startswith("#EXT-X-MEDIA:")]
    assert (audio["TYPE"], audio["GROUP-ID"], audio["DEFAULT"], audio["AUTOSELECT"]) == ("AUDIO", "audio", "YES", "YES")
    assert [v.playlist for v in package.variants] == [f"{name}/index.m3u8" for name in RUNGS]
    lines = master.splitlines()
    for variant, name in zip(package.variants, RUNGS, strict=True):
        info = probe(outputs[name])
        assert variant.resolution == f"{info.display_width}x{info.display_height}"
        assert variant.codecs.startswith("avc1.64") and variant.codecs.endswith(",mp4a.40.2")
        assert variant.frame_rate == 30
        assert 0 < variant.average_bandwidth <= variant.bandwidth  # the peak, and the average beside it
        assert playlist_attributes(lines[lines.index(variant.playlist) - 1])["AUDIO"] == "audio"


def test_media_playlists_are_vod_with_keyframe_aligned_segments_of_the_gop_length(packaged):
    _outputs, folder, package = packaged
    for playlist in [v.playlist for v in package.variants] + ["audio/index.m3u8"]:
        text = (folder / playlist).read_text()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
        durations = [float(line.split(":")[1].rstrip(",")) for line in text.splitlines() if line.startswith("#EXTINF")]
        assert sum(durations) == pytest.approx(SECONDS, abs=0.05)
        if not playlist.startswith("audio"):
            assert durations[:-1] == [KEYFRAME_INTERVAL_SECONDS] * (len(durations) - 1)
            segment_folder = folder / playlist.rsplit("/", 1)[0]
            # every segment starts with a keyframe: init + segment n decodes from its first packet
            for number in range(1, len(durations) + 1):
                joined = folder / f"joined-{number}.mp4"
                joined.write_bytes(
                    (segment_folder / "init.mp4").read_bytes() + (segment_folder / f"{number}.m4s").read_bytes()
                )
                times = keyframe_times(joined)
                assert times and times[0] == pytest.approx((number - 1) * KEYFRAME_INTERVAL_SECONDS, abs=0.05)
                joined.unlink()


def test_the_dash_manifest_is_static_and_lists_the_same_segments(packaged):
    outputs, folder, package = packaged
    mpd = ElementTree.parse(folder / package.dash).getroot()
    assert mpd.get("type") == "static"
    video, audio = mpd.iter(f"{MPD}AdaptationSet")
    sizes = [(int(r.get("width")), int(r.get("height"))) for r in video.iter(f"{MPD}Representation")]
    assert sizes == [(probe(outputs[name]).display_width, probe(outputs[name]).display_height) for name in RUNGS]
    assert sizes[0] == (854, 480)
    templates = [t.get("media") for t in mpd.iter(f"{MPD}SegmentTemplate")]
    assert templates == [
        "h264_480p/$Number$.m4s",
        "h264_360p/$Number$.m4s",
        "h264_240p/$Number$.m4s",
        "audio/$Number$.m4s",
    ]
    assert [r.get("codecs") for r in audio.iter(f"{MPD}Representation")] == ["mp4a.40.2"]


def test_packaging_copies_the_streams_and_leaves_only_the_stream_behind(packaged):
    outputs, folder, package = packaged
    assert "-c" not in packager_command([StreamInput("x", outputs["h264_240p"])])
    names = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    assert HLS_MASTER in names and package.dash in names
    assert not [name for name in names if name.startswith(".")]  # the linked inputs are gone
    # stream copy: the 240p segments hold exactly the rendition's video packets
    joined = folder / "all-240p.mp4"
    segments = sorted((folder / "h264_240p").glob("*.m4s"), key=lambda p: int(p.stem))
    joined.write_bytes(b"".join(p.read_bytes() for p in [folder / "h264_240p" / "init.mp4", *segments]))

    def video_packet_sizes(path):
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size", "-of", "csv=p=0", str(path)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        return out.split()

    assert video_packet_sizes(joined) == video_packet_sizes(outputs["h264_240p"])
    joined.unlink()
