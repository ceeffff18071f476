"""Kubernetes Status responses, and a middleware that turns every failure into one (never a traceback)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..store import StoreError

log = logging.getLogger(__name__)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
    504: "Timeout",
}


def status_body(code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None) -> dict:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    """Raised by handlers for failures that are not store errors (bad parameters, wrong media types...)."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def status_response(code: int, message: str, reason: str | None = None, details: dict | None = None) -> web.Response:
    return json_response(status_body(code, message, reason, details), status=code)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )


@web.middleware
async def status_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except StoreError as e:
        return json_response(e.status(), status=e.code)
    except ApiError as e:
        return status_response(e.code, e.message, e.reason)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        if e.status == 404:
            message = "the server could not find the requested resource"
        return status_response(e.status, message or e.reason)
    except (ConnectionResetError, TimeoutError):
        raise
    except Exception:
        # A bug in the dev cluster: say so in Kubernetes' shape, keep the traceback in the server log.
        log.exception("internal error serving %s %s", request.method, request.path_qs)
        return status_response(500, f"internal error serving {request.method} {request.path}; see the server log")
