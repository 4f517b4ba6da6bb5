"""Errors raised by the Lumora client SDK.

Every error derives from ``LumoraClientError`` so an app can catch the whole family at once.
"""

from __future__ import annotations


class LumoraClientError(Exception):
    """Base class of every error the SDK raises."""


class NetworkError(LumoraClientError):
    """The server could not be reached or the connection broke (retriable)."""


class HTTPStatusError(LumoraClientError):
    """The server answered with an unexpected HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retriable(self) -> bool:
        """Whether trying again later may succeed (server-side and throttling statuses)."""
        return self.status >= 500 or self.status in (408, 425, 429)


class ServerResponseError(LumoraClientError):
    """The server's answer is malformed (bad JSON, missing fields, unsafe paths)."""


class SignatureError(LumoraClientError):
    """A manifest or directive is unsigned or its signature does not verify."""


class StaleAnswerError(SignatureError):
    """A signed answer that is not fresh: expired, older than one already seen, for another
    project, channel or platform, without a freshness statement, or offering an update older
    than the running one without a signed rollback (``lumora_ota.freshness``)."""


class DownloadError(LumoraClientError):
    """An asset could not be downloaded intact."""


class DownloadLengthError(DownloadError):
    """The server sent more bytes than the manifest announced."""


class HashMismatchError(DownloadError):
    """A downloaded asset does not hash to the manifest's SHA-256."""


class InstallError(LumoraClientError):
    """An update could not be installed (file system error, conflicting paths)."""
