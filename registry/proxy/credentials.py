"""Signing in to an upstream the way Docker does: Basic, or a Bearer token from the realm
its challenge names, for the repository's pull scope, kept until it expires."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections import OrderedDict

import httpx

from ..config import ProxyUpstream
from .challenge import Challenge, parse_challenge
from .errors import UpstreamDeniedError, UpstreamInvalidError, UpstreamUnavailableError
from .reading import read_bounded

#: A token reply larger than this is refused (Docker Hub's are a few KiB).
MAX_TOKEN_REPLY = 256 * 1024
#: The token lifetime the distribution spec tells clients to assume when none is given.
DEFAULT_EXPIRES_IN = 60
#: Tokens kept per upstream (one per repository pulled lately).
MAX_TOKENS = 4096
_REALM_RE = re.compile(r"https?://[^\s/?#]+[^\s#]*")


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class UpstreamCredentials:
    """One upstream's challenge and tokens (per worker: a cache, nothing more)."""

    def __init__(self, upstream: ProxyUpstream, http: httpx.AsyncClient) -> None:
        self.upstream = upstream
        self.http = http
        self.challenge: Challenge | None = None
        self._tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = asyncio.Lock()

    def _basic(self) -> str | None:
        if self.upstream.username is None or self.upstream.password is None:
            return None
        return basic_header(self.upstream.username, self.upstream.password.reveal())

    async def authorization(self, scope: str) -> str | None:
        """The ``Authorization`` header for a request in ``scope``, as the challenge asks."""
        challenge = self.challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic()
        if challenge.scheme == "bearer":
            return f"Bearer {await self._token(challenge, scope)}"
        return None

    def refused(self, header: str | None, scope: str) -> bool:
        """Learn from a 401: whether asking again, signed in anew, may succeed."""
        challenge = parse_challenge(header)
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return False
        if challenge.scheme == "basic" and self._basic() is None:
            return False
        self.challenge = challenge
        self._tokens.pop(scope, None)  # Revoked or expired early: a new one.
        return True

    async def _token(self, challenge: Challenge, scope: str) -> str:
        cached = self._tokens.get(scope)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with self._lock:  # One request for a scope's token, however many wait.
            cached = self._tokens.get(scope)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
            token, lifetime = await self._fetch_token(challenge, scope)
            self._tokens[scope] = (token, time.monotonic() + lifetime)
            self._tokens.move_to_end(scope)
            while len(self._tokens) > MAX_TOKENS:
                self._tokens.popitem(last=False)
            return token

    async def _fetch_token(self, challenge: Challenge, scope: str) -> tuple[str, float]:
        realm = challenge.params.get("realm", "")
        if not _REALM_RE.fullmatch(realm):
            raise UpstreamInvalidError(f"the upstream's challenge names no usable realm: {realm!r}")
        params = {"scope": scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {"Accept": "application/json"}
        basic = self._basic()
        if basic is not None:
            headers["Authorization"] = basic
        try:
            request = self.http.build_request("GET", realm, params=params, headers=headers)
            response = await self.http.send(request, stream=True)
            try:
                status = response.status_code
                if status in (401, 403):
                    raise UpstreamDeniedError(f"the upstream's token service refused us ({status})")
                if status == 429 or status >= 500:
                    raise UpstreamUnavailableError(
                        f"the upstream's token service answered {status}"
                    )
                if status != 200:
                    raise UpstreamInvalidError(f"the upstream's token service answered {status}")
                body = await read_bounded(response, MAX_TOKEN_REPLY, "token reply")
            finally:
                await response.aclose()
        except httpx.TransportError as error:
            raise UpstreamUnavailableError(
                f"the upstream's token service: {type(error).__name__}"
            ) from None
        return _token_of(body)


def _token_of(body: bytes) -> tuple[str, float]:
    """The token and how long to keep it (a tenth less than it lives, for clock skew)."""
    try:
        document = json.loads(body)
    except ValueError:
        raise UpstreamInvalidError("the upstream's token reply is not JSON") from None
    if not isinstance(document, dict):
        raise UpstreamInvalidError("the upstream's token reply is not a JSON object")
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
        raise UpstreamInvalidError("the upstream's token reply holds no token")
    expires_in = document.get("expires_in", DEFAULT_EXPIRES_IN)
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = DEFAULT_EXPIRES_IN
    return token, min(float(expires_in), 24 * 3600.0) * 0.9
