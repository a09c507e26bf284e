"""Errors as values at the edge: every failure answers ``{"error": code, "detail": text}``.

Handlers replace FastAPI's default ``{"detail": …}`` bodies, so clients parse
one shape everywhere; bad JSON is 400 ``bad_json``, schema and type errors are
422 ``invalid``, and nothing a client sends can produce a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("dragoon.relay")

_HTTP_CODES = {
    400: "bad_json", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 429: "too_many_requests",
}


class ApiError(Exception):
    """An error answer: HTTP status, a stable code, a human line, optional extra fields."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.detail, **self.extra)


def error_response(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


# The error type of a rule of shared/spec.py: its message is the shared one-line reason,
# which already names its field, so it is the detail as it stands.
RULE_ERROR = "dragoon_rule"


def _describe(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        if err.get("type") == RULE_ERROR:
            parts.append(str(err.get("msg")))
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(err.get("type") == "json_invalid" for err in errors):
            return error_response(400, "bad_json", "the body is not valid JSON")
        return error_response(422, "invalid", _describe(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal", "internal error; see the relay's log")
