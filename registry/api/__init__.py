"""The HTTP API: one module per spec area, wired to the app by :func:`register_api`."""

from __future__ import annotations

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from ..errors import ErrorCode, RegistryError
from .errors import to_registry_error
from .native import error_reply
from .responses import respond
from .routes import ALL_METHODS, dispatch


def error_response(error: RegistryError) -> Response:
    reply = error_reply(error, request.method)
    return respond(reply.status, reply.headers, reply.body)


async def _handle_exception(error: Exception) -> Response:
    return error_response(to_registry_error(error))


async def _handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code = ErrorCode.UNSUPPORTED if status in (404, 405) else ErrorCode.UNKNOWN
    if status == 400:
        code = ErrorCode.BLOB_UPLOAD_INVALID
    return error_response(RegistryError(code, error.description or code.message, status=status))


class _RestConverter(PathConverter):
    """Everything after ``/v2/``, leading and doubled slashes included.

    werkzeug's ``path`` refuses a leading slash and its router answers ``//``
    with an HTML redirect to a merged path, which names another repository;
    the route table and the name grammar judge the path as it was sent instead.
    """

    regex = ".*?"
    part_isolating = False


def register_api(app: Quart, prefix: str = "") -> None:
    app.url_map.converters["rest"] = _RestConverter
    # /v2 without its slash is the version check too, not an HTML redirect.
    for rule, endpoint in ((f"{prefix}/v2", "v2-bare"), (f"{prefix}/v2/", "v2")):
        app.add_url_rule(
            rule,
            endpoint,
            dispatch,
            methods=ALL_METHODS,
            provide_automatic_options=False,
            merge_slashes=False,
        )
    app.add_url_rule(
        f"{prefix}/v2/<rest:rest>",
        "v2-path",
        dispatch,
        methods=ALL_METHODS,
        provide_automatic_options=False,
        merge_slashes=False,
    )
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_exception)
