"""Typed errors that carry the context a person needs to understand a failure."""

from __future__ import annotations

import os
from collections.abc import Sequence


class VidpipeError(Exception):
    """Base class. ``str(err)`` is a one-line message meant for people.

    ``retryable`` says whether running the same work again could succeed (a killed or
    timed-out process) or not (the input itself is unusable).
    """

    retryable = False

    def __init__(self, message: str, *, path: str | None = None, stderr_tail: Sequence[str] = ()):
        super().__init__(message)
        self.message = message
        self.path = path
        self.stderr_tail = list(stderr_tail)

    def context(self) -> dict[str, str]:
        """Context for logs and UI metadata."""
        ctx = {"error": type(self).__name__, "message": self.message}
        if self.path:
            # A file name need not be UTF-8; the event log and the UI need text.
            ctx["file"] = os.fsencode(self.path).decode("utf-8", errors="backslashreplace")
        if self.stderr_tail:
            ctx["stderr_tail"] = "\n".join(self.stderr_tail)
        return ctx


class InvalidMediaError(VidpipeError):
    """The file cannot be used as a video: not media, no video stream, unreadable."""


class ToolFailedError(VidpipeError):
    """ffmpeg or ffprobe exited with an error."""


class ToolTimeoutError(ToolFailedError):
    """ffmpeg or ffprobe ran past its wall-clock limit and was killed."""

    retryable = True


class ToolKilledError(ToolFailedError):
    """ffmpeg or ffprobe was killed by a signal (out of memory, operator): worth retrying."""

    retryable = True


class ToolMissingError(VidpipeError):
    """The ffmpeg or ffprobe binary is not installed where configured."""


class UploadError(VidpipeError):
    """The uploaded file is gone or its content changed since it was seen."""


class StorageFullError(VidpipeError):
    """No space left where outputs are written: not the upload's fault, and not worth an immediate retry."""


class InvalidVideoKeyError(VidpipeError):
    """A partition key vidpipe did not make (typed by hand or sent through the API)."""


class UnknownVideoError(VidpipeError):
    """No video of that key is kept, or it is not in the state an operator's command needs."""
