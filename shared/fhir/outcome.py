"""Errors under /fhir: every one is an OperationOutcome with the HTTP status it deserves.

The native API renders an ``ApiError`` as ``{"status", "error"}``. Under ``/fhir`` the same
exceptions, raised by the identity layer, by the auth middleware or by aiohttp itself
(no such route, method not allowed, body too large), become an OperationOutcome instead;
anything unexpected is logged and answered 500 without a traceback, as natively.

    ApiError (shared.errors)        the native tree, rendered here as OperationOutcome
    ├── NotAcceptable         406  not_acceptable   (_format / Accept asks for XML)
    ├── UnsupportedMediaType  415  unsupported_media_type
    └── Unprocessable         422  unprocessable    (well-formed, but not a Patient we can hold)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from ..errors import ApiError, PayloadTooLarge
from ..keys import settings_key

__all__ = [
    "ERROR_CODE_SYSTEM",
    "FHIR_JSON",
    "NotAcceptable",
    "Unprocessable",
    "UnsupportedMediaType",
    "fhir_errors",
    "fhir_response",
    "is_fhir_path",
    "outcome",
]

log = logging.getLogger("mpi.fhir")

FHIR_JSON = "application/fhir+json"
# The native error code of each issue (duplicate_detected, invalid_check_character, ...).
ERROR_CODE_SYSTEM = "https://api.oomus.health/fhir/CodeSystem/mpi-error"


class NotAcceptable(ApiError):
    status = 406
    code = "not_acceptable"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(ApiError):
    status = 422
    code = "unprocessable"


# http://hl7.org/fhir/valueset-issue-type.html, by HTTP status; a few native codes refine it.
_ISSUE_TYPE = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
    406: "not-supported", 409: "conflict", 413: "too-costly", 415: "not-supported", 422: "processing",
}
_ISSUE_TYPE_BY_CODE = {
    "duplicate_detected": "duplicate",
    "external_id_in_use": "duplicate",
    "validation_error": "invalid",
    "unprocessable": "processing",
}


def is_fhir_path(path: str) -> bool:
    return path == "/fhir" or path.startswith("/fhir/")


def fhir_response(resource: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A FHIR JSON answer (``application/fhir+json; charset=utf-8``)."""
    return web.Response(
        text=json.dumps(resource, ensure_ascii=False),
        status=status,
        content_type=FHIR_JSON,
        charset="utf-8",
        headers=headers,
    )


def outcome(exc: ApiError) -> dict[str, Any]:
    """The OperationOutcome of an error: one issue, or one per bad element when there are several."""
    kind = _ISSUE_TYPE_BY_CODE.get(exc.code) or _ISSUE_TYPE.get(exc.status, "exception")
    severity = "fatal" if exc.status >= 500 else "error"
    diagnostics = exc.message
    existing = exc.extra.get("existing_mpi_id")
    if existing:
        diagnostics += f" Existing: Patient/{existing}"
        if "similarity_score" in exc.extra:
            diagnostics += f" (score {exc.extra['similarity_score']})"
    coding = {"system": ERROR_CODE_SYSTEM, "code": exc.code}
    issues: list[dict[str, Any]] = []
    # A failure that names its elements: FHIRPath expressions (ours) or native field names.
    for item in exc.extra.get("issues") or []:
        issue: dict[str, Any] = {
            "severity": severity, "code": kind, "details": {"coding": [coding], "text": item["message"]},
            "diagnostics": item["message"],
        }
        if item.get("expression"):
            issue["expression"] = [item["expression"]]
        issues.append(issue)
    if not issues:
        issues.append({"severity": severity, "code": kind, "details": {"coding": [coding], "text": exc.message},
                       "diagnostics": diagnostics})
    elif existing:
        issues[0]["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": issues}


def error_response(exc: ApiError) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="mpi"'} if exc.status == 401 else None
    return fhir_response(outcome(exc), exc.status, headers)


def _wants_xml(request: web.Request) -> bool:
    fmt = request.query.get("_format", "").lower()
    if fmt and "json" not in fmt:
        return True
    accept = request.headers.get("Accept", "").lower()
    return bool(accept) and "xml" in accept and "json" not in accept and "*/*" not in accept


@web.middleware
async def fhir_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Under /fhir, render every error as an OperationOutcome; elsewhere, stand aside."""
    if not is_fhir_path(request.path):
        passed: web.StreamResponse = await handler(request)
        return passed
    try:
        if _wants_xml(request):
            raise NotAcceptable("this server answers FHIR JSON only (application/fhir+json)")
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[settings_key].max_body_bytes
        return error_response(PayloadTooLarge(f"the request body is larger than {limit} bytes"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return error_response(ApiError(f"no FHIR interaction at {request.method} {request.path}",
                                           code="not_found", status=404))
        if exc.status == 405:
            return error_response(ApiError(f"method {request.method} is not allowed here",
                                           code="method_not_allowed", status=405))
        return error_response(ApiError(exc.reason, code="http_error", status=exc.status))
    except Exception:
        log.exception("unexpected error", extra={"fields": {"method": request.method, "path": request.path}})
        return error_response(ApiError("internal error: the server logged it", code="internal", status=500))
