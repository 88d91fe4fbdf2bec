import json
from dataclasses import fields
from pathlib import Path

import dagster as dg
import pytest

from vidpipe import settings
from vidpipe.definitions import build_definitions, deployment_resources
from vidpipe.defs.resources import FFmpegResource
from vidpipe.defs.storage import S3VideoStorage
from vidpipe.media.ffmpeg_calls import Limits, Tools


def test_limits_and_folders_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDPIPE_MAX_PIXELS", "921600")
    monkeypatch.setenv("VIDPIPE_MAX_DURATION_SECONDS", "600")
    monkeypatch.setenv("VIDPIPE_STORAGE", str(tmp_path / "out"))
    with dg.build_resources(build_definitions().resources) as resources:
        assert (resources.ffmpeg.max_pixels, resources.ffmpeg.max_duration_seconds) == (921600, 600.0)
        assert resources.ffmpeg.max_streams == 16
        assert resources.storage.root == str(tmp_path / "out")


def test_a_bad_setting_says_which_variable_is_wrong(monkeypatch):
    monkeypatch.setenv("VIDPIPE_MAX_STREAMS", "lots")
    with pytest.raises(ValueError, match="VIDPIPE_MAX_STREAMS must be a number, not 'lots'"):
        settings.limit_overrides()
    monkeypatch.setenv("VIDPIPE_SETTLE_SECONDS", "soon")
    with pytest.raises(ValueError, match="VIDPIPE_SETTLE_SECONDS must be a number of seconds, not 'soon'"):
        settings.settle_seconds()


def test_the_default_folders_are_in_the_checkout_or_else_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("VIDPIPE_DATA", raising=False)
    monkeypatch.delenv("VIDPIPE_STORAGE", raising=False)
    checkout = Path(settings.__file__).resolve().parent.parent
    assert settings.storage_location() == checkout / "data" / "storage"
    # An installed package (site-packages/vidpipe) has no pyproject.toml beside it.
    installed = tmp_path / "site-packages" / "vidpipe"
    installed.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert settings.project_dir(installed) == tmp_path
    monkeypatch.setenv("VIDPIPE_DATA", str(tmp_path / "elsewhere"))
    assert settings.storage_location() == tmp_path / "elsewhere" / "storage"


def test_each_limit_is_declared_once_and_shows_everywhere_it_is_set():
    """``Limits`` and ``Tools`` declare the settings; the resource's config, the variables and the README follow them."""
    resource = FFmpegResource()
    tools = resource.tools()
    assert tools == Tools(), "a resource field's default differs from the value object's"
    resource_fields = set(FFmpegResource.model_fields)
    readme = (Path(settings.__file__).resolve().parent.parent / "README.md").read_text()
    for limit in fields(Limits):
        assert limit.name in resource_fields
        assert f"| `{settings.limit_variable(limit.name)}` |" in readme, f"{limit.name} is not in the README's table"
    # Every resource field reaches the value object: a changed field changes ``tools()``.
    for name, value in FFmpegResource.model_fields.items():
        changed = FFmpegResource(**{name: "x" if isinstance(value.default, str) else value.default + 1})
        assert changed.tools() != tools, f"FFmpegResource.{name} never reaches Tools"


def test_storage_in_a_bucket_is_named_by_url_and_reached_as_the_aws_variables_say(monkeypatch):
    monkeypatch.setenv("VIDPIPE_STORAGE", "s3://videos/platform/uploads/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDVIDPIPE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-never-shown")
    storage = deployment_resources()["storage"]
    assert isinstance(storage, S3VideoStorage)
    assert (storage.bucket, storage.prefix) == ("videos", "platform/uploads/")
    assert storage.location("clip-0123456789ab", "manifest.json") == (
        "s3://videos/platform/uploads/clip-0123456789ab/manifest.json"
    )
    config = json.dumps(storage.s3.model_dump(), default=str)
    assert "AKIDVIDPIPE" not in config and "secret-never-shown" not in config
    monkeypatch.setenv("VIDPIPE_STORAGE", "s3://Not_A_Bucket/x")
    with pytest.raises(ValueError, match="VIDPIPE_STORAGE must name a bucket"):
        settings.storage_location()
