import base64
import io
import itertools

from PIL import Image

from vidpipe.media.probe import probe
from vidpipe.media.thumbnail import (
    FIRST_FRAME_PACKETS,
    first_frame_byte_ranges,
    preview_data_uri,
    read_first_frame,
    write_thumbnails,
)
from vidpipe_tests.clips import decode_frame, mean_difference


def test_thumbnail_is_the_first_frame(landscape_clip, tmp_path):
    frame = read_first_frame(landscape_clip, probe(landscape_clip))
    files = write_thumbnails(frame, tmp_path)
    largest = Image.open(tmp_path / next(f.file for f in files if f.format == "jpeg" and f.width == 640)).convert("RGB")
    assert mean_difference(largest, decode_frame(landscape_clip, 0)) < 3
    assert mean_difference(largest, decode_frame(landscape_clip, 45)) > 3 * mean_difference(
        largest, decode_frame(landscape_clip, 0)
    )


def test_thumbnails_come_in_jpeg_and_webp_never_wider_than_the_source(landscape_clip, tmp_path):
    files = write_thumbnails(read_first_frame(landscape_clip, probe(landscape_clip)), tmp_path)
    assert sorted((f.format, f.width, f.height) for f in files) == [
        ("jpeg", 320, 180),
        ("jpeg", 640, 360),
        ("webp", 320, 180),
        ("webp", 640, 360),
    ]
    for f in files:
        with Image.open(tmp_path / f.file) as image:
            assert image.format == f.format.upper() and image.size == (f.width, f.height)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_thumbnail_of_a_phone_clip_is_upright(phone_clip):
    info = probe(phone_clip)
    frame = read_first_frame(phone_clip, info)
    assert frame.size == (360, 640)
    raw = decode_frame(phone_clip, autorotate=False)
    assert mean_difference(frame, raw.rotate(-info.rotation, expand=True)) < 3
    assert mean_difference(frame, raw.rotate(info.rotation, expand=True)) > 20


def test_preview_is_a_tiny_jpeg_data_uri(landscape_clip):
    uri = preview_data_uri(read_first_frame(landscape_clip, probe(landscape_clip)))
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) < 12_000
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.format == "JPEG" and image.width == 160


def test_the_packets_decoding_the_first_frame_reads_are_found_in_the_index(landscape_clip, tmp_path):
    info = probe(landscape_clip)
    ranges = first_frame_byte_ranges(landscape_clip, info)
    # ffmpeg writes the index (moov) at the end: the first packets follow the header at the start.
    assert len(ranges) == FIRST_FRAME_PACKETS
    assert ranges[0].start < 4096 and all(a.stop <= b.start for a, b in itertools.pairwise(ranges))
    assert ranges[-1].stop < landscape_clip.stat().st_size // 2

    # Without its index (the end cut off), nothing can be located.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(landscape_clip.read_bytes()[: ranges[-1].stop])
    assert first_frame_byte_ranges(cut, info) is None
