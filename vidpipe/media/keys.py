"""Partition keys: a readable slug of the file name plus a short content hash.

Dagster's UI refuses ``| , [ ]``, spaces and control characters in partition keys, so
keys are made only of ``[a-z0-9._-]`` and bounded in length.
"""

from __future__ import annotations

import re
import unicodedata

HASH_CHARS = 12
MAX_SLUG_CHARS = 48
_KEY_PATTERN = re.compile(rf"^(?:[a-z0-9][a-z0-9-]{{0,{MAX_SLUG_CHARS - 1}}}-)?[0-9a-f]{{{HASH_CHARS}}}$")


def slugify(filename: str) -> str:
    """``"Holiday Clip (1).MOV"`` → ``"holiday-clip-1"``; empty if nothing readable remains."""
    stem = filename.rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem.lstrip(".") else stem
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return slug[:MAX_SLUG_CHARS].rstrip("-")


def short_hash(sha256: str) -> str:
    """The part of a content hash that partition keys carry."""
    return sha256[:HASH_CHARS]


def partition_key(filename: str, sha256: str) -> str:
    slug = slugify(filename)
    return f"{slug}-{short_hash(sha256)}" if slug else short_hash(sha256)


def content_hash_of(key: str) -> str:
    """The short content hash a partition key ends with."""
    return key.rsplit("-", 1)[-1]


def is_partition_key(key: str) -> bool:
    return bool(_KEY_PATTERN.match(key))
