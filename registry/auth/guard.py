"""The access guard: one ASGI layer in front of both ways into a handler.

Manifest and blob reads are answered before Quart (``api/native.py``), the rest
by Quart; this layer sits in front of both, so no route can be reached without
the check. It asks the route table what the request needs, the controller
whether the caller has it, and either answers the error itself (before a byte
of the body is read) or passes the request on with the caller's grant attached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from ..api.native import error_reply, send_reply
from ..errors import RegistryError
from .access import Need
from .controllers import AccessController, DeniedError
from .grant import attach, name
from .logins import Caller

#: The route table's answer: what a request (path after ``/v2/``, method, query) needs,
#: or None for what no route serves (the 404s and 405s, answered as usual).
NeedOf = Callable[[str, str, bytes], Need | None]


class AccessGuard:
    def __init__(
        self, app: Any, controller: AccessController, need_of: NeedOf, prefix: str = ""
    ) -> None:
        self.app = app
        self.controller = controller
        self.need_of = need_of
        self.api = f"{prefix}/v2"

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            need = None
            if path == self.api or path.startswith(self.api + "/"):
                rest = path[len(self.api) + 1 :]
                need = self.need_of(rest, scope["method"], scope["query_string"])
            if need is not None:
                try:
                    grant = await self.controller.authorize(Caller.of(scope), need)
                except RegistryError as error:
                    if isinstance(error, DeniedError):
                        name(scope, error.user)
                    method = scope["method"]
                    await send_reply(error_reply(error, method), receive, send, method)
                    return
                attach(scope, grant)
        await self.app(scope, receive, send)
