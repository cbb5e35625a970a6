"""The users of an htpasswd file, re-read when it changes, with passwords checked cheaply.

bcrypt costs tens of milliseconds on purpose, and Docker sends Basic
credentials with every request of a push. A password that checked out once is
remembered, as an HMAC under a key that lives and dies with the process (never
the password itself), for as long as the user's line in the file is unchanged;
removing a user or changing a password takes effect at the next request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping

from . import htpasswd

log = logging.getLogger(__name__)

#: Verified credentials remembered per process.
MAX_REMEMBERED = 1024
#: Checked against when the user does not exist, so that costs what a wrong password
#: costs (a cost-10 hash of random bytes nobody kept; never accepted either way).
_DUMMY_HASH = "$2b$10$J.vuiT27mZ/cS3Q7Y2kWz.HSHcufc1G1q2cIxEAG4VL4fiaEQOqGK"
#: The stat key before the first read: unlike None (a missing file), it matches no file.
_UNREAD = (-1, -1, -1, -1)


class UserFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._stat: tuple[int, int, int, int] | None = _UNREAD
        self._users: Mapping[str, str] = {}
        self._secret = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[bool]] = {}
        self.users()

    def users(self) -> Mapping[str, str]:
        """The current users; the file is read again when it has changed.

        A change that breaks the file is logged and the last good users kept,
        so a mistake while editing never locks everyone out (or lets anyone in).
        """
        current = htpasswd.stat_key(self.path)
        if current == self._stat:
            return self._users
        first = self._stat == _UNREAD
        self._stat = current
        try:
            self._users = htpasswd.read(self.path).users
        except htpasswd.HtpasswdError as error:
            if first:
                raise
            log.error("%s; keeping the users read before", error)
            return self._users
        if not first:
            log.info("%s changed: %d user(s)", self.path, len(self._users))
        return self._users

    def entry(self, user: str) -> str | None:
        return self.users().get(user)

    async def verify(self, user: str, password: str) -> bool:
        hashed = self.users().get(user)
        key = hmac.new(self._secret, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if hashed is not None and self._verified.get(key) == hashed:
            self._verified.move_to_end(key)
            return True
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            valid = await asyncio.to_thread(
                htpasswd.check_password, password, hashed or _DUMMY_HASH
            )
            valid = valid and hashed is not None
            future.set_result(valid)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # Retrieved: no "never retrieved" warning when nobody waits.
            raise
        finally:
            del self._pending[key]
        if valid and hashed is not None:
            self._verified[key] = hashed
            while len(self._verified) > MAX_REMEMBERED:
                self._verified.popitem(last=False)
        return valid
