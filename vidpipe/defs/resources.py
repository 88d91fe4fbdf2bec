"""Resources: how ffmpeg is run, where uploads arrive, how steps hand values on (storage is in ``storage``)."""

from __future__ import annotations

import pickle
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import fields
from pathlib import Path

import dagster as dg
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from PIL import Image

from vidpipe.defs.storage import VideoStorage, downloaded, is_missing, shared_client
from vidpipe.inbox import (
    EMPTY_SETTLE_SECONDS,
    HASH_BUDGET_SECONDS,
    SETTLE_SECONDS,
    FolderListing,
    InboxCursor,
    InboxListing,
    InboxScan,
    S3Listing,
    readable_name,
    resolve_upload,
    scan_inbox,
    upload_name,
)
from vidpipe.media.encoder import EncodeCommand, Encoded, Progress, build_encode_command, run_encode
from vidpipe.media.errors import UploadError
from vidpipe.media.ffmpeg_calls import Limits, Tools
from vidpipe.media.ladder import PlannedRendition
from vidpipe.media.packaging import StreamInput, StreamPackage, package_stream
from vidpipe.media.priority import CpuPriority
from vidpipe.media.probe import VideoInfo, probe
from vidpipe.media.quality import QualityReport, Rendition, quality_report
from vidpipe.media.storyboard import Storyboard, make_storyboard
from vidpipe.media.thumbnail import first_frame_byte_ranges, read_first_frame
from vidpipe.media.validate import validate_upload


class FFmpegResource(dg.ConfigurableResource):
    """How ffmpeg, ffprobe and the stream packager are run and what uploads they accept: ``Tools`` as Dagster config.

    Every field's default is ``Tools``'s or ``Limits``'s (``test_settings`` holds the two to the same
    names); ``tools()`` is what the media functions get."""

    ffmpeg_path: str = Tools.ffmpeg
    ffprobe_path: str = Tools.ffprobe
    packager_path: str = Tools.packager
    threads: int = Tools.threads
    probe_timeout_seconds: float = Tools.probe_timeout_seconds
    encode_timeout_seconds: float = Tools.encode_timeout_seconds
    max_pixels: int = Limits.max_pixels
    max_frame_rate: float = Limits.max_frame_rate
    max_duration_seconds: float = Limits.max_duration_seconds
    max_file_bytes: int = Limits.max_file_bytes
    max_streams: int = Limits.max_streams
    max_damaged_fraction: float = Limits.max_damaged_fraction
    """The share of a video's frames that may come out of decoding damaged or lost (salvaged)."""

    def tools(self) -> Tools:
        return Tools(
            ffmpeg=self.ffmpeg_path,
            ffprobe=self.ffprobe_path,
            packager=self.packager_path,
            threads=self.threads,
            probe_timeout_seconds=self.probe_timeout_seconds,
            encode_timeout_seconds=self.encode_timeout_seconds,
            limits=Limits(**{limit.name: getattr(self, limit.name) for limit in fields(Limits)}),
        )

    def validate_upload(self, upload: Path) -> VideoInfo:
        """The validation gate: probe an upload, refuse it with a clear reason unless usable."""
        return validate_upload(upload, self.tools())

    def probe(self, path: Path) -> VideoInfo:
        return probe(path, self.tools())

    def encode(
        self,
        source: Path,
        info: VideoInfo,
        plans: list[PlannedRendition],
        out_dir: Path,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        priority: CpuPriority | None = None,
        stop: threading.Event | None = None,
    ) -> tuple[EncodeCommand, Encoded]:
        """Encode every plan in one ffmpeg process; return its command, the published files and
        what decoding met. ``priority`` and ``stop``: see ``run_tool``."""
        tools = self.tools()
        command = build_encode_command(source, info, plans, out_dir, tools)
        encoded = run_encode(
            command, info, tools, on_progress=on_progress, subject=str(source), priority=priority, stop=stop
        )
        return command, encoded

    def storyboard(self, source: Path, info: VideoInfo, out_dir: Path) -> Storyboard:
        return make_storyboard(source, info, out_dir, self.tools())

    def package_stream(self, inputs: list[StreamInput], out_dir: Path) -> StreamPackage:
        return package_stream(inputs, out_dir, self.tools())

    def quality_report(
        self, source: Path, info: VideoInfo, renditions: list[Rendition], out_dir: Path
    ) -> QualityReport:
        return quality_report(source, info, renditions, out_dir, self.tools())

    def first_frame(self, source: Path, info: VideoInfo) -> Image.Image:
        return read_first_frame(source, info, self.tools())

    def first_frame_byte_ranges(self, source: Path, info: VideoInfo) -> list[range] | None:
        return first_frame_byte_ranges(source, info, self.tools())


class InboxResource(dg.ConfigurableResource):
    """Where uploads arrive, which the sensor watches and the only place runs take uploads from:
    a folder (``FolderInbox``) or an S3 prefix (``S3Inbox``)."""

    settle_seconds: float = SETTLE_SECONDS
    empty_settle_seconds: float = EMPTY_SETTLE_SECONDS
    """An empty file is not an upload until it has stayed empty this long (it may be written later)."""
    hash_budget_seconds: float = HASH_BUDGET_SECONDS

    @abstractmethod
    def listing(self) -> InboxListing:
        """What the scan reads (see ``inbox.InboxListing``)."""

    @abstractmethod
    def fetch(self, name_ref: str) -> AbstractContextManager[Path]:
        """A local copy of the upload a run's upload tag names, for the block's duration; nothing
        outside the inbox (see ``inbox.upload_name``)."""

    def scan(self, cursor: InboxCursor, *, wait_for_settling_seconds: float = 0.0) -> InboxScan:
        """The finished uploads since ``cursor`` (see ``inbox.scan_inbox``)."""
        return scan_inbox(
            self.listing(),
            cursor,
            settle_seconds=self.settle_seconds,
            empty_settle_seconds=self.empty_settle_seconds,
            hash_budget_seconds=self.hash_budget_seconds,
            wait_for_settling_seconds=wait_for_settling_seconds,
        )


class FolderInbox(InboxResource):
    """An upload folder; runs read the upload in place (``inbox.resolve_upload``)."""

    path: str

    def listing(self) -> InboxListing:
        inbox = Path(self.path)
        inbox.mkdir(parents=True, exist_ok=True)
        return FolderListing(inbox)

    @contextmanager
    def fetch(self, name_ref: str) -> Iterator[Path]:
        yield resolve_upload(Path(self.path), name_ref)


class S3Inbox(InboxResource):
    """The objects directly under ``prefix`` in ``bucket``; runs download the upload into ``scratch``.

    Credentials come from the environment, as for ``S3VideoStorage``.
    """

    s3: S3Resource
    bucket: str
    prefix: str = ""
    scratch: str

    def listing(self) -> InboxListing:
        return S3Listing(shared_client(self.s3), self.bucket, self.prefix)

    @contextmanager
    def fetch(self, name_ref: str) -> Iterator[Path]:
        name = upload_name(name_ref)
        try:
            with downloaded(shared_client(self.s3), self.bucket, self.prefix + name, self.scratch, "upload") as local:
                yield local
        except ClientError as err:
            if is_missing(err):
                raise UploadError(f"the upload '{readable_name(name)}' is no longer in the inbox") from None
            raise


class StepValues(dg.IOManager):
    """The values steps hand to the next ones (``SourceVideo``, ``RenditionFile``, ``RenditionSet``, …),
    pickled into the video's storage (``VideoStorage.keep_step_value``), so that a step on another
    machine reads what the one before it wrote.

    Dagster's own IO managers keep them in the instance's local folder, which another machine cannot
    read, and show their location as an asset's ``path`` row, beside the real files: a person would
    take it for the video. This one adds no metadata.
    """

    def __init__(self, storage: VideoStorage):
        self.storage = storage

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        self.storage.keep_step_value(context.asset_partition_key, _value_name(context.asset_key), pickle.dumps(obj))

    def load_input(self, context: dg.InputContext) -> object:
        return kept_value(self.storage, context.asset_partition_key, context.asset_key)


def kept_value(storage: VideoStorage, key: str, asset_key: dg.AssetKey) -> object:
    """The value of ``asset_key`` for video ``key`` that its last materialization kept (``StepValues``)."""
    name = _value_name(asset_key)
    data = storage.step_value(key, name)
    if data is None:
        raise UploadError(f"{name} of video {key} was never made: materialize it first")
    return pickle.loads(data)


def _value_name(asset_key: dg.AssetKey) -> str:
    return "/".join(asset_key.path)


@dg.io_manager(
    required_resource_keys={"storage"},
    description="Values passed between steps, pickled into the video's storage beside its original.",
)
def step_values(init_context: dg.InitResourceContext) -> StepValues:
    return StepValues(init_context.resources.storage)
