"""Resources: where videos are kept, how ffmpeg is run, where uploads arrive."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from PIL import Image
from upath import UPath

from vidpipe.inbox import InboxCursor, InboxScan, resolve_upload, scan_inbox
from vidpipe.media.encoder import EncodeCommand, Encoded, Progress, build_encode_command, run_encode
from vidpipe.media.errors import InvalidVideoKeyError, VidpipeError
from vidpipe.media.ffmpeg_calls import Limits, Tools
from vidpipe.media.files import copy_atomically_with_sha256, remove_orphaned_temporaries, write_atomically
from vidpipe.media.keys import content_hash_of, is_partition_key
from vidpipe.media.ladder import PlannedRendition
from vidpipe.media.probe import VideoInfo, probe
from vidpipe.media.thumbnail import read_first_frame
from vidpipe.media.validate import validate_upload

REJECTION_FILE = "rejection.json"
ENCODE_RECORD_FILE = "encode.json"
MANIFEST_FILE = "manifest.json"
OUTPUT_KINDS = ("renditions", "thumbnails")
FAILED_RUNS_FILE = "failed_runs.jsonl"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StoredOriginal:
    path: Path
    name: str
    """The upload's name for people (see ``inbox.readable_name``)."""
    name_ref: str
    """The upload's exact name in the inbox, percent-encoded (see ``inbox.name_ref``)."""
    sha256: str


class VideoStorage(dg.ConfigurableResource):
    """Where originals and outputs live. Assets only use these methods.

    Implementations hand out local paths: a remote store (S3) downloads the original to
    a local cache and uploads the output folders once they are complete.
    """

    @abstractmethod
    def store_original(self, key: str, upload: Path, name: str, name_ref: str) -> StoredOriginal:
        """Copy an upload into immutable storage; refuse it if its content no longer matches ``key``."""

    @abstractmethod
    def stored_original(self, key: str) -> StoredOriginal | None:
        """The original already stored for ``key``, if any."""

    @abstractmethod
    def output_dir(self, key: str, kind: str = "") -> Path:
        """A local folder for ``key``'s outputs of one kind (``""`` is the video's own folder)."""

    @abstractmethod
    def record_rejection(self, key: str, error: VidpipeError) -> None:
        """Keep why ``key``'s upload was refused, next to its original."""

    @abstractmethod
    def rejection_reason(self, key: str) -> str | None:
        """Why ``key``'s upload was refused, if it was."""

    @abstractmethod
    def rejections(self) -> list[dict]:
        """Every recorded rejection (the content of each ``rejection.json``), oldest video folder first."""

    @abstractmethod
    def rejected_video(self, content: str) -> str | None:
        """The key of a refused upload whose content hash (``keys.short_hash``) is ``content``, if any."""

    @abstractmethod
    def forget(self, key: str) -> None:
        """Remove everything kept for ``key``: original, records and outputs."""

    @abstractmethod
    def clear_rejection(self, key: str) -> None:
        """Forget an earlier rejection (the upload passed validation since, e.g. under new limits)."""

    @abstractmethod
    def withdraw_outputs(self, key: str) -> None:
        """Remove every output of ``key`` (renditions, thumbnails, manifest); the original and records stay."""

    @abstractmethod
    def record_renditions(self, key: str, records: dict[str, dict]) -> None:
        """Keep, per rung, how ``key``'s rendition was made (the exact ffmpeg command, what decoding met)
        next to its original (private, never published); rungs not named keep their earlier record."""

    @abstractmethod
    def rendition_records(self, key: str) -> dict[str, dict]:
        """Rung name → the record kept by ``record_renditions``."""

    @abstractmethod
    def record_failed_run(self, entry: dict) -> None:
        """Append one failed run to the operators' log."""


class LocalVideoStorage(VideoStorage):
    """Everything under one folder: ``<root>/<video>/{source.*,renditions/,thumbnails/,manifest.json}``."""

    root: str

    def video_dir(self, key: str) -> Path:
        if not is_partition_key(key):
            raise InvalidVideoKeyError(
                f"{json.dumps(key)} is not a video key: vidpipe's keys are a name and a 12-digit content hash, "
                "like holiday-0123456789ab"
            )
        return Path(self.root) / key

    def store_original(self, key: str, upload: Path, name: str, name_ref: str) -> StoredOriginal:
        extension = re.sub(r"[^a-z0-9]", "", Path(name).suffix.lower())[:8] or "bin"
        target = self.video_dir(key) / f"source.{extension}"
        sha256 = copy_atomically_with_sha256(upload, target, expected_sha256_prefix=content_hash_of(key))
        record = {"name": name, "name_ref": name_ref, "sha256": sha256, "file": target.name}
        write_atomically(self.video_dir(key) / "source.json", json.dumps(record, indent=2).encode())
        return StoredOriginal(path=target, name=name, name_ref=name_ref, sha256=sha256)

    def stored_original(self, key: str) -> StoredOriginal | None:
        record_path = self.video_dir(key) / "source.json"
        if not record_path.exists():
            return None
        record = json.loads(record_path.read_text())
        return StoredOriginal(
            path=self.video_dir(key) / record["file"],
            name=record["name"],
            name_ref=record.get("name_ref", ""),  # absent from records written before it was kept
            sha256=record["sha256"],
        )

    def output_dir(self, key: str, kind: str = "") -> Path:
        """Created on demand; temporary files left by a killed writer are cleared first."""
        directory = self.video_dir(key) / kind
        directory.mkdir(parents=True, exist_ok=True)
        remove_orphaned_temporaries(directory)
        return directory

    def record_rejection(self, key: str, error: VidpipeError) -> None:
        stored = self.stored_original(key)
        record = {
            "video": key,
            "reason": error.message,
            "error": type(error).__name__,
            "original": stored.path.name if stored else None,
            "original_name": stored.name if stored else None,
            "rejected_at": _now(),
            "ffmpeg_stderr_tail": error.stderr_tail,
        }
        write_atomically(self.output_dir(key) / REJECTION_FILE, json.dumps(record, indent=2).encode())

    def rejection_reason(self, key: str) -> str | None:
        try:
            return json.loads((self.video_dir(key) / REJECTION_FILE).read_text())["reason"]
        except FileNotFoundError:
            return None

    def rejections(self) -> list[dict]:
        records = []
        for path in sorted(Path(self.root).glob(f"*/{REJECTION_FILE}")):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # removed meanwhile, or being replaced
                continue
        return records

    def rejected_video(self, content: str) -> str | None:
        if not re.fullmatch(r"[0-9a-f]+", content):
            return None
        return next((path.parent.name for path in Path(self.root).glob(f"*-{content}/{REJECTION_FILE}")), None)

    def forget(self, key: str) -> None:
        shutil.rmtree(self.video_dir(key), ignore_errors=True)

    def clear_rejection(self, key: str) -> None:
        (self.video_dir(key) / REJECTION_FILE).unlink(missing_ok=True)

    def withdraw_outputs(self, key: str) -> None:
        video = self.video_dir(key)
        for kind in OUTPUT_KINDS:
            shutil.rmtree(video / kind, ignore_errors=True)
        (video / MANIFEST_FILE).unlink(missing_ok=True)

    def record_renditions(self, key: str, records: dict[str, dict]) -> None:
        merged = {**self.rendition_records(key), **{name: {"encoded_at": _now(), **r} for name, r in records.items()}}
        record = {"video": key, "renditions": merged}
        write_atomically(self.video_dir(key) / ENCODE_RECORD_FILE, json.dumps(record, indent=2).encode())

    def rendition_records(self, key: str) -> dict[str, dict]:
        try:
            return json.loads((self.video_dir(key) / ENCODE_RECORD_FILE).read_text()).get("renditions", {})
        except FileNotFoundError:
            return {}

    def record_failed_run(self, entry: dict) -> None:
        """One JSON object per line in ``<root>/failed_runs.jsonl``; appends of one line are atomic."""
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"failed_at": _now(), **entry}, sort_keys=True) + "\n"
        with open(root / FAILED_RUNS_FILE, "a", encoding="utf-8") as log:
            log.write(line)


class FFmpegResource(dg.ConfigurableResource):
    """How ffmpeg and ffprobe are run and what uploads they accept: ``Tools`` as Dagster config.

    Every field's default is ``Tools``'s or ``Limits``'s (``test_settings`` holds the two to the same
    names); ``tools()`` is what the media functions get."""

    ffmpeg_path: str = Tools.ffmpeg
    ffprobe_path: str = Tools.ffprobe
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
    ) -> tuple[EncodeCommand, Encoded]:
        """Encode every plan in one ffmpeg process; return its command, the published files and
        what decoding met."""
        tools = self.tools()
        command = build_encode_command(source, info, plans, out_dir, tools)
        encoded = run_encode(command, info, tools, on_progress=on_progress, subject=str(source))
        return command, encoded

    def first_frame(self, source: Path, info: VideoInfo) -> Image.Image:
        return read_first_frame(source, info, self.tools())


class InboxResource(dg.ConfigurableResource):
    """The upload folder the sensor watches, and the only place runs take uploads from."""

    path: str
    settle_seconds: float = 2.0
    empty_settle_seconds: float = 60.0
    """An empty file is not an upload until it has stayed empty this long (it may be written later)."""
    hash_budget_seconds: float = 20.0
    one_process_below_bytes: int = 32 * 2**20
    """Uploads smaller than this run all their steps in the run's own process (see ``step_executor``)."""

    def scan(self, cursor: InboxCursor, *, wait_for_settling_seconds: float = 0.0) -> InboxScan:
        """The finished uploads since ``cursor`` (see ``inbox.scan_inbox``)."""
        inbox = Path(self.path)
        inbox.mkdir(parents=True, exist_ok=True)
        return scan_inbox(
            inbox,
            cursor,
            settle_seconds=self.settle_seconds,
            empty_settle_seconds=self.empty_settle_seconds,
            hash_budget_seconds=self.hash_budget_seconds,
            wait_for_settling_seconds=wait_for_settling_seconds,
        )

    def resolve(self, name_ref: str) -> Path:
        """The inbox file a run's upload tag names; nothing outside the inbox (see ``inbox.resolve_upload``)."""
        return resolve_upload(Path(self.path), name_ref)


class StepValues(dg.UPathIOManager):
    """The values steps hand to the next ones (``SourceVideo``, ``RenditionFile``, ``RenditionSet``, …),
    pickled under the instance's storage folder as Dagster's own filesystem IO manager keeps them.

    Dagster's shows each pickle's location as an asset's ``path`` row, beside the real files
    (``stored_at``, ``file``): a person would take it for the video. This one says what it is.
    """

    extension = ""

    def dump_to_path(self, context: dg.OutputContext, obj: object, path: UPath) -> None:
        with path.open("wb") as file:
            pickle.dump(obj, file)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> object:
        with path.open("rb") as file:
            return pickle.load(file)

    def get_metadata(self, context: dg.OutputContext, obj: object) -> dict[str, dg.MetadataValue]:
        return {"path": dg.MetadataValue.text("not a video file: Dagster's copy of this result for the steps after it")}


@dg.io_manager(description="Values passed between steps, pickled under the instance's storage folder.")
def step_values(init_context: dg.InitResourceContext) -> StepValues:
    assert init_context.instance is not None  # a run's resources always have one
    return StepValues(base_path=UPath(init_context.instance.storage_directory()))
