"""The web app people watch videos in: a gallery of the videos in the catalog and a player page per video.

It reads the catalog (the gallery, a page at a time) and storage (a video's manifest and files), never the
Dagster instance, so it runs wherever those are reachable. Media files are served from storage: from a local folder with
HTTP range requests, or, from S3, by a redirect to a presigned URL. The playlists, the DASH
manifest and the storyboard track are served by the app itself in both cases: the files they
list are named relative to them, and so resolve to the app, which then redirects each one.

The player is shaka-player (HLS and DASH, seek-bar thumbnails from a WebVTT storyboard) with its
own controls, installed from the npm registry by the set-up (``settings.player_library_dir``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vidpipe.catalog import STATES, Catalog, Video
from vidpipe.catalog.store import PAGE_SIZE
from vidpipe.defs.storage import VideoStorage, content_type, is_published
from vidpipe.media.errors import InvalidVideoKeyError
from vidpipe.media.files import INDEX_SUFFIXES

HERE = Path(__file__).resolve().parent
URL_SECONDS = 3600
"""How long a presigned media URL stays valid: longer than anyone watches one video."""
SERVED_BY_THE_APP = (*INDEX_SUFFIXES, ".json")
WATCHABLE = ("playable", "ready", "retired")
"""The states in which a video has a player page to go to."""


@dataclass(frozen=True)
class GalleryEntry:
    key: str
    name: str
    state: str
    """One of the catalog's ``STATES``."""
    created_at: str
    duration: float | None = None
    thumbnail: str | None = None
    """The URL of its smallest JPEG thumbnail."""
    reason: str | None = None
    """Why it was rejected."""

    @classmethod
    def of(cls, video: Video) -> GalleryEntry:
        thumbnail = media_url(video.key, video.thumbnail) if video.thumbnail else None
        created = video.created_at.isoformat(timespec="seconds") + "Z"
        return cls(video.key, video.name, video.state, created, video.duration, thumbnail, video.reason)

    @property
    def watchable(self) -> bool:
        return self.state in WATCHABLE

    @property
    def duration_text(self) -> str:
        if self.duration is None:
            return ""
        minutes, seconds = divmod(round(self.duration), 60)
        return f"{minutes}:{seconds:02d}"


@dataclass(frozen=True)
class GalleryPage:
    """One page of the gallery: the filter it was asked with, its videos, the total and the next page's query."""

    entries: list[GalleryEntry]
    total: int
    total_capped: bool
    state: str | None
    search: str
    next_query: str | None
    """The query string of the next page (same filter, its cursor); None on the last page."""

    def as_json(self) -> dict:
        return {
            "videos": [entry.__dict__ for entry in self.entries],
            "total": self.total,
            "total_capped": self.total_capped,
            "next": f"/api/videos?{self.next_query}" if self.next_query else None,
        }


def gallery_page(catalog: Catalog, query: Mapping[str, str]) -> GalleryPage:
    """The page ``query`` asks for (``state``, ``q``, ``after``, ``limit``), newest first, from the catalog."""
    state = query.get("state") or None
    search = query.get("q", "").strip()
    asked = query.get("limit", "")
    limit = int(asked) if asked.isdigit() else PAGE_SIZE
    try:
        found = catalog.page(state=state, search=search, after=query.get("after") or None, limit=limit)
    except ValueError as err:
        raise HTTPException(400, str(err)) from None
    filters = {name: value for name, value in (("state", state), ("q", search), ("limit", asked)) if value}
    return GalleryPage(
        entries=[GalleryEntry.of(video) for video in found.videos],
        total=found.total,
        total_capped=found.total_capped,
        state=state,
        search=search,
        next_query=urlencode({**filters, "after": found.next_cursor}) if found.next_cursor else None,
    )


def media_url(key: str, file: str) -> str:
    return f"/media/{key}/{file}"


def build_app(storage: VideoStorage, catalog: Catalog, player_library: Path) -> Starlette:
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape())

    def page(template: str, status_code: int = 200, **values: object) -> HTMLResponse:
        return HTMLResponse(templates.get_template(template).render(**values), status_code=status_code)

    async def gallery(request: Request) -> HTMLResponse:
        return page("gallery.html", gallery=gallery_page(catalog, request.query_params), states=STATES)

    async def videos(request: Request) -> JSONResponse:
        return JSONResponse(gallery_page(catalog, request.query_params).as_json())

    async def player(request: Request) -> HTMLResponse:
        key = request.path_params["key"]
        manifest = _manifest_of(storage, key)
        if manifest is None:
            video = catalog.video(key)
            if video is None:
                raise HTTPException(404, "no such video")
            return page("waiting.html", entry=GalleryEntry.of(video))
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
