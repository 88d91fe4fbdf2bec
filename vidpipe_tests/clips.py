"""Small test clips generated with ffmpeg's lavfi sources, and ffprobe helpers for assertions."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageChops, ImageStat

from vidpipe.media.probe import VideoInfo


def make_clip(
    path: Path,
    *,
    size: str = "640x360",
    rate: int = 30,
    seconds: float = 5,
    audio: bool = True,
    rotate: int | None = None,
    sar: str | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """testsrc2 (+ a sine tone) as H.264/AAC MP4; ``rotate`` adds display-rotation metadata."""
    encoded = path if rotate is None else path.with_name(f"unrotated-{path.name}")
    argv = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    # testsrc2 rounds odd sizes down to even ones; the scale filter keeps the exact size.
    filters = [f"scale={size.replace('x', ':')}", f"setsar=sar={sar or 1}"]
    argv += ["-vf", ",".join(filters), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", pix_fmt]
    if audio:
        argv += ["-c:a", "aac"]
    subprocess.run([*argv, str(encoded)], check=True)
    if rotate is not None:
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-i",
                str(encoded),
                "-c",
                "copy",
                "-metadata:s:v:0",
                f"rotate={rotate}",
                str(path),
            ],
            check=True,
        )
        encoded.unlink()
    return path


def ffprobe_json(path: Path, *extra: str) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", *extra, str(path)],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)


def stream(path: Path, codec_type: str) -> dict | None:
    return next((s for s in ffprobe_json(path)["streams"] if s["codec_type"] == codec_type), None)


def frame_count(path: Path) -> int:
    data = ffprobe_json(path, "-count_frames", "-select_streams", "v:0")
    return int(data["streams"][0]["nb_read_frames"])


def keyframe_times(path: Path) -> list[float]:
    """Presentation times of the video packets flagged as keyframes."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [line.split(",") for line in out.splitlines() if line.strip()]
    return sorted(float(pts) for pts, flags, *_ in rows if "K" in flags)


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 box types at the top of the file, in order."""
    boxes, data = [], path.read_bytes()
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


def decode_frame(path: Path, index: int = 0, *, autorotate: bool = True) -> Image.Image:
    """Frame ``index`` decoded by ffmpeg on its own, as RGB."""
    argv = ["ffmpeg", "-v", "error"]
    if not autorotate:
        argv.append("-noautorotate")
    argv += [
        "-i",
        str(path),
        "-vf",
        f"select=eq(n\\,{index})",
        "-frames:v",
        "1",
        "-f",
        "image2pipe",
        "-c:v",
        "png",
        "pipe:1",
    ]
    png = subprocess.run(argv, check=True, capture_output=True).stdout
    import io

    return Image.open(io.BytesIO(png)).convert("RGB")


def raw_frames(path: Path, pix_fmt: str = "gray", *, frames: int | None = None) -> tuple[int, int, list[bytes]]:
    """The width, height and first ``frames`` (default: all) frames of ``path``, decoded by ffmpeg on its own
    to ``pix_fmt`` planes of one byte a sample (``yuv444p``: the Y, then the Cb, then the Cr plane)."""
    video = stream(path, "video")
    assert video is not None, path
    width, height = int(video["width"]), int(video["height"])
    argv = ["ffmpeg", "-v", "error", "-noautorotate", "-i", str(path)]
    if frames is not None:
        argv += ["-frames:v", str(frames)]
    argv += ["-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]
    data = subprocess.run(argv, check=True, capture_output=True).stdout
    planes = {"gray": 1, "yuv444p": 3}[pix_fmt]
    size = width * height * planes
    assert data and len(data) % size == 0, (path, len(data), size)
    return width, height, [data[offset : offset + size] for offset in range(0, len(data), size)]


def combing(luma: bytes, width: int, height: int, threshold: int = 16) -> float:
    """The share of pixels that stand out from both the row above and the row below, the same way,
    by more than ``threshold``: the teeth of a comb, which two fields from different moments woven
    into one picture leave along every moving edge. Progressive pictures have few."""
    rows = [luma[y * width : (y + 1) * width] for y in range(height)]
    teeth = 0
    for above, row, below in zip(rows, rows[1:], rows[2:], strict=False):
        for a, b, c in zip(above, row, below, strict=True):
            if min(b - a, b - c) > threshold or max(b - a, b - c) < -threshold:
                teeth += 1
    return teeth / (width * (height - 2))


def patch_means(plane: bytes, width: int, centres: list[tuple[int, int]], radius: int = 6) -> list[float]:
    """The mean sample of ``plane`` in the square of side ``2 * radius`` around each (x, y) of ``centres``."""
    means = []
    for x, y in centres:
        samples = [
            plane[row * width + col] for row in range(y - radius, y + radius) for col in range(x - radius, x + radius)
        ]
        means.append(sum(samples) / len(samples))
    return means


HDR_CARD_STEP = 32
"""Width and height, in pixels, of each patch of ``hdr_test_card``."""


def hdr_test_card(
    path: Path, transfer: str, grays: list[int], colours: list[tuple[int, int, int]], *, seconds: float = 0.5
) -> Path:
    """10-bit H.264 tagged BT.2020 with ``transfer`` (smpte2084 = PQ, arib-std-b67 = HLG), as ``corpus.ten_bit``.

    The top row is a staircase of neutral patches, one per 8-bit limited-range luma level of ``grays``;
    the bottom row one patch per 8-bit (Y, Cb, Cr) of ``colours``. Each patch is ``HDR_CARD_STEP``
    pixels square, left to right; the 10-bit codes are the 8-bit ones times 4.
    """

    def steps(values: list[int], default: int) -> str:
        """An expression of X: ``values[i]`` over the i-th patch, ``default`` right of the last."""
        levels = [*values, default]
        return "+".join(
            f"{level - (levels[i - 1] if i else 0)}*gte(X,{i * HDR_CARD_STEP})" for i, level in enumerate(levels)
        )

    def plane(top: list[int], bottom: list[int], default: int) -> str:
        return f"if(lt(Y,{HDR_CARD_STEP}),{steps(top, default)},{steps(bottom, default)})"

    width = HDR_CARD_STEP * max(len(grays), len(colours))
    lum = plane(grays, [y for y, _, _ in colours], 16)
    cb = plane([128] * len(grays), [cb for _, cb, _ in colours], 128)
    cr = plane([128] * len(grays), [cr for _, _, cr in colours], 128)
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"nullsrc=size={width}x{2 * HDR_CARD_STEP}:rate=30:duration={seconds},format=yuv444p,"
            f"geq=lum='{lum}':cb='{cb}':cr='{cr}'",
            "-c:v", "libx264", "-pix_fmt", "yuv420p10le",
            "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute per-channel difference (0-255) after bringing ``b`` to ``a``'s size."""
    b = b.resize(a.size, Image.Resampling.BILINEAR)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def ssim(a: Image.Image, b: Image.Image, window: int = 8) -> float:
    """The structural similarity of two pictures' luma (``b`` brought to ``a``'s size), averaged over
    ``window``-pixel squares: 1 for the same picture, lower as structure differs."""
    luma_a = a.convert("L")
    luma_b = b.convert("L").resize(a.size, Image.Resampling.BICUBIC)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    width, height = a.size
    pixels_a, pixels_b = luma_a.load(), luma_b.load()
    scores = []
    for top in range(0, height - window + 1, window):
        for left in range(0, width - window + 1, window):
            xs = [pixels_a[x, y] for y in range(top, top + window) for x in range(left, left + window)]
            ys = [pixels_b[x, y] for y in range(top, top + window) for x in range(left, left + window)]
            n = len(xs)
            mean_x, mean_y = sum(xs) / n, sum(ys) / n
            var_x = sum((x - mean_x) ** 2 for x in xs) / n
            var_y = sum((y - mean_y) ** 2 for y in ys) / n
            cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / n
            scores.append(
                ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
            )
    return sum(scores) / len(scores)


def video_info(
    width: int,
    height: int,
    *,
    rotation: int = 0,
    sar: Fraction = Fraction(1),
    fps: Fraction = Fraction(30),
    audio: bool = True,
) -> VideoInfo:
    """A ``VideoInfo`` as ffprobe would report it, for planning tests that need no file."""
    return VideoInfo(
        container="mov,mp4,m4a,3gp,3g2,mj2",
        duration=10.0,
        width=width,
        height=height,
        rotation=rotation,
        sample_aspect_ratio=sar,
        avg_frame_rate=fps,
        nominal_frame_rate=fps,
        pixel_format="yuv420p",
        color_transfer=None,
        field_order="progressive",
        video_codec="h264",
        video_stream=0,
        audio_stream=1 if audio else None,
        has_audio=audio,
        audio_codec="aac" if audio else None,
        audio_channels=2 if audio else None,
        bit_rate=1_000_000,
        size_bytes=1_250_000,
    )
