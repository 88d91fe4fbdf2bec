"""``vidpipe serve`` in a real browser: Debian's Chromium, driven by Playwright, plays what the pipeline made.

One video is processed for real (a 7 s 854x480 clip: three H.264 rungs in the stream) and one upload
is refused; then ``vidpipe serve`` serves them from that storage, as ``./dev.sh run`` starts it.
"""

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from vidpipe_tests.clips import make_clip
from vidpipe_tests.harness import BIN_DIR, BUCKET, Pipeline, catalog_beside, free_port, stop, wait_until

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
SECONDS = 7


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(the player's URL, the processed video's key and manifest, the refused upload's key)."""
    root = tmp_path_factory.mktemp("player")
    (root / "uploads").mkdir()
    clip = make_clip(root / "uploads" / "Beach Walk.mp4", size="854x480", seconds=SECONDS)
    (root / "bad").mkdir()
    bad = root / "bad" / "notes.mp4"
    bad.write_text("these are my notes, not a video\n")
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, root / "storage")
        key = pipeline.add(clip)
        pipeline.materialize(key, upload=clip)
        refused = pipeline.add(bad)
        pipeline.materialize(refused, upload=bad, raise_on_error=False)
    with serving(root / "storage") as url:
        manifest = json.loads((root / "storage" / key / "manifest.json").read_text())
        yield url, key, manifest, refused


@contextmanager
def serving(storage: Path) -> Iterator[str]:
    """``vidpipe serve`` of ``storage`` (and its catalog), as ``./dev.sh run`` starts it: its URL."""
    port = free_port()
    env = {
        **os.environ,
        "VIDPIPE_STORAGE": str(storage),
        "VIDPIPE_CATALOG": catalog_beside(storage).url,
        "VIDPIPE_PLAYER_PORT": str(port),
    }
    server = subprocess.Popen([str(BIN_DIR / "vidpipe"), "serve"], env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), timeout=30, what="vidpipe serve to answer")
        yield url
    finally:
        stop([server])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/videos", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./dev.sh test installs Debian's chromium")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        yield chromium
        chromium.close()


def open_player(browser, url: str):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-player]", timeout=20_000)
    assert page.evaluate("document.body.dataset.player") == "ready", (errors, page.content()[-2000:])
    return page


def test_the_hls_stream_plays_to_the_end(served, browser):
    url, key, _manifest, _ = served
    page = open_player(browser, f"{url}/videos/{key}")
    assert page.evaluate("vidpipePlayer.getAssetUri()").endswith("/stream/master.m3u8")
    page.evaluate("video = document.getElementById('video'); video.playbackRate = 2; video.play()")
    page.wait_for_function("document.getElementById('video').ended", timeout=30_000)
    assert page.evaluate("document.getElementById('video').currentTime") == pytest.approx(SECONDS, abs=0.2)


def test_each_level_forced_in_turn_plays_at_the_size_the_manifest_lists(served, browser):
    url, key, manifest, _ = served
    page = open_player(browser, f"{url}/videos/{key}")
    listed = sorted((level["width"], level["height"]) for level in manifest["streams"]["hls"]["levels"])
    assert len(listed) == 3 and listed[-1] == (854, 480)
    tracks = page.evaluate("vidpipePlayer.getVariantTracks().map(t => [t.id, t.width, t.height])")
    assert sorted((w, h) for _, w, h in tracks) == listed
    page.evaluate("vidpipePlayer.configure({abr: {enabled: false}})")
    for track_id, width, height in tracks:
        page.evaluate(
            """async (id) => {
                const video = document.getElementById('video');
                video.pause();
                vidpipePlayer.selectVariantTrack(vidpipePlayer.getVariantTracks().find(t => t.id === id), true);
                video.currentTime = 0;
                await video.play();
            }""",
            track_id,
        )
        # at least 2 s of media time played on this level, and the picture decoded at its size
        page.wait_for_function("document.getElementById('video').currentTime >= 2.2", timeout=20_000)
        shown = page.evaluate(
            "[document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]"
        )
        active = page.evaluate("vidpipePlayer.getVariantTracks().filter(t => t.active).map(t => t.id)")
        assert (shown, active) == ([width, height], [track_id])


def test_the_dash_manifest_plays_too(served, browser):
    url, key, manifest, _ = served
    page = open_player(browser, f"{url}/videos/{key}?format=dash")
    assert page.evaluate("vidpipePlayer.getAssetUri()").endswith("/stream/manifest.mpd")
    assert len(page.evaluate("vidpipePlayer.getVariantTracks()")) == len(manifest["streams"]["hls"]["levels"])
    page.evaluate("document.getElementById('video').play()")
    page.wait_for_function("document.getElementById('video').currentTime >= 3", timeout=20_000)


def test_the_player_shows_storyboard_tiles_while_scrubbing(served, browser, tmp_path):
    url, key, manifest, _ = served
    storyboard = manifest["storyboard"]
    page = open_player(browser, f"{url}/videos/{key}")
    [track] = page.evaluate("vidpipePlayer.getImageTracks()")
    thumbnail = page.evaluate("async (id) => await vidpipePlayer.getThumbnails(id, 3.5)", track["id"])
    # the cue of 3.5 s is the fourth tile (3 s to 4 s) of the first sheet
    width, height = storyboard["tile_width"], storyboard["tile_height"]
    tile = f"{url}/media/{key}/{storyboard['images'][0]}#xywh={3 * width},0,{width},{height}"
    assert (thumbnail["uris"], thumbnail["startTime"], thumbnail["duration"]) == ([tile], 3, 1), thumbnail
    # hovering over the seek bar shows that tile
    bar = page.locator(".shaka-seek-bar-container")
    page.locator(".shaka-video-container").hover()
    box = bar.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 3.5 / SECONDS, box["y"] + box["height"] / 2)
    preview = page.locator(".shaka-player-ui-thumbnail-container")
    preview.wait_for(state="visible", timeout=5_000)
    image = page.locator(".shaka-player-ui-thumbnail-image")
    # the sheet once loaded and laid out (its src is set before the image has arrived)
    page.wait_for_function(
        "(image => image.src.includes('sheet_000') && image.complete && image.getBoundingClientRect().width > 0)"
        "(document.querySelector('.shaka-player-ui-thumbnail-image'))"
    )
    assert image.bounding_box()["width"] >= width  # the whole sheet, moved so that the tile shows
    page.screenshot(path=str(os.environ.get("VIDPIPE_SCREENSHOTS", tmp_path)) + "/player.png")


def test_the_gallery_lists_ready_videos_with_thumbnails_and_refused_ones_with_why(served, browser):
    url, key, _manifest, refused = served
    page = browser.new_page()
    page.goto(url)
    ready = page.locator(f'li[data-key="{key}"]')
    assert ready.get_attribute("data-state") == "ready"
    assert ready.locator(".name").inner_text() == "Beach Walk.mp4"
    assert ready.locator(".duration").inner_text() == "0:07"
    image = ready.locator("img")
    image.wait_for()
    assert page.evaluate("(img) => img.complete && img.naturalWidth", image.element_handle()) == 320
    rejected = page.locator(f'li[data-key="{refused}"]')
    assert rejected.get_attribute("data-state") == "rejected"
    assert rejected.locator(".name").inner_text() == "notes.mp4"
    assert rejected.locator(".reason").inner_text() == "not a video: the file is text"
    assert page.locator(".total").inner_text() == "2 videos"
    # searching by a word of the name, as a person types it into the form
    page.fill('input[name="q"]', "beach")
    page.click('button[type="submit"]')
    page.wait_for_url("**/?q=beach*")
    assert page.locator("li.video").evaluate_all("items => items.map(item => item.dataset.key)") == [key]
    assert page.locator(".total").inner_text() == "1 video"
    # a refused upload's page says why; an unknown video is not found
    page.goto(f"{url}/videos/{refused}")
    assert page.locator(".reason").inner_text() == "This upload was refused: not a video: the file is text"
    assert page.goto(f"{url}/videos/nothing-0123456789ab").status == 404


def test_media_is_served_with_ranges_and_types_and_nothing_private(served):
    url, key, manifest, _ = served

    def get(path: str, headers: dict | None = None):
        request = urllib.request.Request(f"{url}/media/{key}/{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, b""

    status, headers, body = get(manifest["renditions"][0]["path"], {"Range": "bytes=100-199"})
    assert (status, headers["Content-Type"], len(body)) == (206, "video/mp4", 100)
    expected = {
        manifest["streams"]["hls"]["path"]: "application/vnd.apple.mpegurl",
        manifest["streams"]["dash"]["path"]: "application/dash+xml",
        manifest["storyboard"]["vtt"]: "text/vtt; charset=utf-8",
        "stream/h264_240p/1.m4s": "video/iso.segment",
    }
    for path, mime in expected.items():
        status, headers, _ = get(path)
        assert (status, headers["Content-Type"]) == (200, mime), path
    for private in ("source.mp4", "source.json", "encode.json", "steps/source_video", "renditions/../source.mp4"):
        assert get(private)[0] == 404, private


def test_with_s3_storage_media_are_presigned_redirects_and_playlists_come_from_the_app(s3_server, tmp_path):
    """``vidpipe serve`` on S3 storage: a segment or rendition is a redirect to a presigned URL that serves it,
    a playlist is served by the app (the files it names resolve to the app), private files are not given."""
    prefix = f"serve-{uuid.uuid4().hex[:8]}/"
    key = "clip-0123456789ab"
    files = {
        "source.mp4": b"the original",
        "source.json": json.dumps({"file": "source.mp4", "name": "Clip.mp4", "sha256": "0" * 64}).encode(),
        "renditions/h264_240p.mp4": b"rendition bytes",
        "stream/master.m3u8": b"#EXTM3U\nh264_240p/index.m3u8\n",
        "stream/h264_240p/1.m4s": b"segment bytes",
    }
    for name, body in files.items():
        s3_server.client().put_object(Bucket=BUCKET, Key=f"{prefix}{key}/{name}", Body=body)
    port = free_port()
    env = {
        **os.environ,
        **s3_server.environment(),
        "VIDPIPE_STORAGE": f"s3://{BUCKET}/{prefix}",
        "VIDPIPE_SCRATCH": str(tmp_path / "scratch"),
        "VIDPIPE_PLAYER_PORT": str(port),
        "VIDPIPE_CATALOG": f"sqlite:///{tmp_path / 'catalog.sqlite'}",
    }
    # the catalog made from what the bucket holds
    rebuild = [str(BIN_DIR / "vidpipe"), "catalog", "rebuild"]
    rebuilt = subprocess.run(rebuild, env=env, capture_output=True, text=True, check=False)
    assert rebuilt.returncode == 0 and "1 video(s)" in rebuilt.stdout, rebuilt.stderr
    server = subprocess.Popen([str(BIN_DIR / "vidpipe"), "serve"], env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), timeout=30, what="vidpipe serve to answer")

        class NoRedirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirects)
        for name in ("renditions/h264_240p.mp4", "stream/h264_240p/1.m4s"):
            with pytest.raises(urllib.error.HTTPError) as redirect:
                opener.open(f"{url}/media/{key}/{name}", timeout=5)
            assert redirect.value.code == 302
            location = redirect.value.headers["Location"]
            assert location.startswith(s3_server.endpoint) and "Signature" in location
            with urllib.request.urlopen(location, timeout=5) as direct:
                assert direct.read() == files[name]
        with urllib.request.urlopen(f"{url}/media/{key}/stream/master.m3u8", timeout=5) as playlist:
            assert (playlist.status, playlist.read()) == (200, files["stream/master.m3u8"])
        for private in ("source.mp4", "source.json"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                opener.open(f"{url}/media/{key}/{private}", timeout=5)
            assert refused.value.code == 404
        with urllib.request.urlopen(f"{url}/api/videos", timeout=5) as listing:
            listed = json.loads(listing.read())
        [video] = listed["videos"]
        assert (listed["total"], listed["next"]) == (1, None)
        assert {name: video[name] for name in ("key", "name", "state", "duration", "thumbnail", "reason")} == {
            "key": key,
            "name": "Clip.mp4",
            "state": "processing",
            "duration": None,
            "thumbnail": None,
            "reason": None,
        }
    finally:
        stop([server])


def test_a_playable_video_plays_its_first_rendition_then_every_rung_after_a_reload(browser, tmp_path):
    """Published playable (the first rung, alone), the gallery says so and the player plays that rung; once the
    rest is made, the gallery says ready and a reloaded player page gets every rung."""
    (tmp_path / "uploads").mkdir()
    clip = make_clip(tmp_path / "uploads" / "Harbour.mp4", size="854x480", seconds=3)
    storage = tmp_path / "storage"
    ladder = [dg.AssetKey(["renditions", name]) for name in ("h264_480p", "h264_240p", "vp9_360p", "ladder")]
    with dg.instance_for_test() as instance, serving(storage) as url:
        pipeline = Pipeline(instance, storage)
        key = pipeline.add(clip)
        first = [dg.AssetKey("source_video"), dg.AssetKey("thumbnail"), dg.AssetKey(["renditions", "h264_360p"])]
        assert pipeline.materialize(key, upload=clip, selection=[*first, dg.AssetKey("playable")]).success
        gallery = browser.new_page()
        gallery.goto(url)
        entry = gallery.locator(f'li[data-key="{key}"]')
        assert (entry.get_attribute("data-state"), entry.locator(".state").inner_text()) == ("playable", "playable")
        entry.locator("img").wait_for()
        page = open_player(browser, f"{url}/videos/{key}")
        assert page.locator("#state").get_attribute("data-state") == "playable"
        assert page.evaluate("vidpipePlayer.getVariantTracks().map(t => t.height)") == [360]
        page.evaluate("document.getElementById('video').play()")
        page.wait_for_function("document.getElementById('video').currentTime >= 1", timeout=20_000)
        assert page.evaluate("document.getElementById('video').videoHeight") == 360
        rest = [*ladder, *(dg.AssetKey(name) for name in ("storyboard", "stream", "quality", "video_manifest"))]
        assert pipeline.materialize(key, selection=rest).success
        # the page loaded before keeps playing what it loaded, to the end
        page.wait_for_function("document.getElementById('video').ended", timeout=20_000)
        page.reload()
        page.wait_for_selector("body[data-player=ready]", timeout=20_000)
        assert page.locator("#state").get_attribute("data-state") == "complete"
        heights = page.evaluate("vidpipePlayer.getVariantTracks().map(t => t.height)")
        assert sorted(heights) == [240, 360, 480]
        gallery.reload()
        assert gallery.locator(f'li[data-key="{key}"] .state').inner_text() == "ready"
