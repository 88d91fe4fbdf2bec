"""The web app people watch videos in: a gallery of the videos in storage and a player page per video.

It reads storage only (the manifests, the rejection records), never the Dagster instance, so it
runs wherever storage is reachable. Media files are served from storage: from a local folder with
HTTP range requests, or, from S3, by a redirect to a presigned URL. The playlists, the DASH
manifest and the storyboard track are served by the app itself in both cases: the files they
list are named relative to them, and so resolve to the app, which then redirects each one.

The player is shaka-player (HLS and DASH, seek-bar thumbnails from a WebVTT storyboard) with its
own controls, installed from the npm registry by the set-up (``settings.player_library_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vidpipe.defs.storage import VideoStorage, content_type, is_published
from vidpipe.media.errors import InvalidVideoKeyError
from vidpipe.media.files import INDEX_SUFFIXES

HERE = Path(__file__).resolve().parent
URL_SECONDS = 3600
"""How long a presigned media URL stays valid: longer than anyone watches one video."""
SERVED_BY_THE_APP = (*INDEX_SUFFIXES, ".json")


@dataclass(frozen=True)
class GalleryEntry:
    key: str
    name: str
    state: str
    """``ready``, ``processing`` or ``rejected``."""
    duration: float | None = None
    thumbnail: str | None = None
    """The URL of its smallest JPEG thumbnail."""
    reason: str | None = None
    """Why it was rejected."""

    @property
    def duration_text(self) -> str:
        if self.duration is None:
            return ""
        minutes, seconds = divmod(round(self.duration), 60)
        return f"{minutes}:{seconds:02d}"


def gallery_entries(storage: VideoStorage) -> list[GalleryEntry]:
    """Every stored video: ready (with a manifest), rejected (with why) or still processing."""
    return [entry for key in storage.videos() if (entry := video_entry(storage, key)) is not None]


def video_entry(storage: VideoStorage, key: str) -> GalleryEntry | None:
    """One video's gallery entry; None when storage holds nothing of it."""
    reason = storage.rejection_reason(key)
    manifest = None if reason is not None else storage.manifest(key)
    if manifest is not None:
        source = manifest["source"]
        thumbnail = _smallest_thumbnail(key, manifest)
        return GalleryEntry(key, source["name"], "ready", duration=source["duration"], thumbnail=thumbnail)
    stored = storage.stored_original(key)
    if stored is None and reason is None:
        return None
    name = stored.name if stored else key
    return (
        GalleryEntry(key, name, "rejected", reason=reason)
        if reason is not None
        else GalleryEntry(key, name, "processing")
    )


def _smallest_thumbnail(key: str, manifest: dict) -> str | None:
    jpegs = [t for t in manifest["thumbnails"] if t["format"] == "jpeg"]
    return media_url(key, min(jpegs, key=lambda t: t["width"])["path"]) if jpegs else None


def media_url(key: str, file: str) -> str:
    return f"/media/{key}/{file}"


def build_app(storage: VideoStorage, player_library: Path) -> Starlette:
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape())

    def page(template: str, status_code: int = 200, **values: object) -> HTMLResponse:
        return HTMLResponse(templates.get_template(template).render(**values), status_code=status_code)

    async def gallery(request: Request) -> HTMLResponse:
        return page("gallery.html", entries=gallery_entries(storage))

    async def videos(request: Request) -> JSONResponse:
        return JSONResponse([entry.__dict__ for entry in gallery_entries(storage)])

    async def player(request: Request) -> HTMLResponse:
        key = request.path_params["key"]
        manifest = _manifest_of(storage, key)
        if manifest is None:
            entry = video_entry(storage, key)
            if entry is None:
                raise HTTPException(404, "no such video")
            return page("waiting.html", entry=entry)
        streams = manifest.get("streams") or {}
        storyboard = manifest.get("storyboard")
        thumbnails = sorted(manifest["thumbnails"], key=lambda t: -t["width"])
        return page(
            "player.html",
            key=key,
            manifest=manifest,
            sources={
                "hls": media_url(key, streams["hls"]["path"]) if "hls" in streams else None,
                "dash": media_url(key, streams["dash"]["path"]) if "dash" in streams else None,
                "storyboard": media_url(key, storyboard["vtt"]) if storyboard else None,
                "files": [media_url(key, r["path"]) for r in manifest["renditions"]],
            },
            poster=media_url(key, thumbnails[0]["path"]) if thumbnails else None,
        )

    async def media(request: Request) -> Response:
        key, file = request.path_params["key"], request.path_params["file"]
        if not is_published(file):
            raise HTTPException(404, "not a published file")
        if file.endswith(SERVED_BY_THE_APP):
            data = _published(storage, key, file)
            return Response(data, media_type=content_type(file), headers={"Cache-Control": "no-cache"})
        try:
            where = storage.delivery(key, file, URL_SECONDS)
        except InvalidVideoKeyError:
            raise HTTPException(404, "no such video") from None
        if where is None:
            raise HTTPException(404, "no such file")
        if isinstance(where, Path):
            return FileResponse(where, media_type=content_type(file))
        return RedirectResponse(where, status_code=302)

    return Starlette(
        routes=[
            Route("/", gallery),
            Route("/api/videos", videos),
            Route("/videos/{key}", player),
            Route("/media/{key}/{file:path}", media),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
            Mount("/player", StaticFiles(directory=player_library, check_dir=False), name="player"),
        ]
    )


def _manifest_of(storage: VideoStorage, key: str) -> dict | None:
    try:
        return storage.manifest(key)
    except InvalidVideoKeyError:
        raise HTTPException(404, "no such video") from None


def _published(storage: VideoStorage, key: str, file: str) -> bytes:
    try:
        data = storage.published_file(key, file)
    except InvalidVideoKeyError:
        raise HTTPException(404, "no such video") from None
    if data is None:
        raise HTTPException(404, "no such file")
    return data
