"""What can go wrong with an upstream, and what the client is told for each."""

from __future__ import annotations

from ..errors import ErrorCode, RegistryError


class UpstreamError(Exception):
    """The upstream did not give what was asked."""


class UpstreamNotFoundError(UpstreamError):
    """The upstream answered 404: it has no such content (cached content is not served)."""


class UpstreamDeniedError(UpstreamError):
    """The upstream refused our credentials or our token (401/403 after signing in).

    Docker Hub answers so for a repository that does not exist, too."""


class UpstreamUnavailableError(UpstreamError):
    """The upstream could not be reached, timed out, or answered 429 or 5xx."""


class UpstreamInvalidError(UpstreamError):
    """The upstream answered something unusable: a wrong digest, a cut or oversized body,
    an invalid manifest, a malformed token reply."""


def client_error(error: UpstreamError, unknown: ErrorCode) -> RegistryError:
    """The error a client gets when nothing cached can stand in.

    Unreachable is 503 UNAVAILABLE: transient, clients retry it. An unusable answer is
    502 (a bad gateway, not our fault or the client's). A missing or refused one is the
    404 the content would be (``unknown``: MANIFEST_UNKNOWN or BLOB_UNKNOWN), so no
    client takes our credentials' failure for its own.
    """
    detail = {"upstream": str(error)}
    if isinstance(error, UpstreamNotFoundError | UpstreamDeniedError):
        return RegistryError(unknown, detail=detail)
    if isinstance(error, UpstreamInvalidError):
        return RegistryError(
            ErrorCode.UNKNOWN, "the upstream registry sent an unusable answer", detail=detail,
            status=502,
        )  # fmt: skip
    return RegistryError(
        ErrorCode.UNAVAILABLE, "the upstream registry is unavailable", detail=detail
    )
