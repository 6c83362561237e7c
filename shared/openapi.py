"""The OpenAPI 3.1 document of every route, built from the route table and the schemas.

It states what the code enforces: the patterns of path parameters (MPI ID, card token, DHIS2
UID, review item id), the request schemas of ``shared.schemas`` (patterns, enumerations,
bounds), every status a route can answer, and the shape of each answer, so that a
schema-driven fuzzer (``tests/test_fuzz.py``) can hold the server to it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .routes import Route

__all__ = ["openapi_document", "statuses_of"]

_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["status", "error"],
    "properties": {
        "status": {"type": "string"},
        "error": {"type": "string"},
        "details": {
            "type": "array",
            "items": {"type": "object", "required": ["field", "message"],
                      "properties": {"field": {"type": "string"}, "message": {"type": "string"}}},
        },
    },
}
_VERIFY_NOT_FOUND: dict[str, Any] = {
    "type": "object",
    "required": ["status", "message"],
    "properties": {"status": {"const": "not_found"}, "message": {"type": "string"}},
}

# What a path parameter looks like. IDs are read case-insensitively and trimmed, so the
# MPI ID pattern admits lower case; its check character is verified by the server (400).
_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "mpi_id": {"type": "string", "pattern": r"^[A-Za-z]{2}-[A-Za-z]{3}-[0-9]{2}-[A-Za-z0-9]{8}$"},
    "token": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{16,128}$"},
    "dhis2_uid": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9]{10}$"},
    "id": {"type": "string", "pattern": r"^[0-9]{1,18}$"},
}

_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"}


def _object(required: Sequence[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


_PROGRAMMES = {"type": "array", "items": _object(["programme_type", "linked_at"], programme_type=_STR, linked_at=_TIME)}
_IDENTITY = _object(
    ["mpi_id", "first_name", "last_name", "date_of_birth", "gender", "region_code", "country_code", "phone_number",
     "programmes", "external_ids", "status", "created_at", "updated_at"],
    mpi_id=_STR, first_name=_STR, last_name=_STR, date_of_birth=_STR_OR_NULL,
    gender={"enum": ["M", "F", "U", None]}, region_code=_STR, country_code=_STR, phone_number=_STR_OR_NULL,
    programmes=_PROGRAMMES, external_ids={"type": "object", "additionalProperties": _STR},
    status=_STR, created_at=_TIME, updated_at=_TIME, merged_from=_STR,
)
_CARD = _object(["mpi_id", "card_code", "campaign_id", "status", "issued_at"],
                mpi_id=_STR, card_code=_STR, campaign_id=_STR, status={"enum": ["valid", "revoked"]}, issued_at=_TIME)
_PAGE = {"type": "array"}

# The success answer of each handler, by its name (the operationId).
_ANSWERS: dict[str, dict[str, Any]] = {
    "register": _object(["mpi_id", "status", "confidence", "created_at"],
                        mpi_id=_STR, status={"const": "created"}, confidence=_STR, created_at=_TIME),
    "search": _object(["total", "items"], total=_INT, items={"type": "array", "items": _object(
        ["mpi_id", "first_name", "last_name", "date_of_birth", "gender", "region_code", "programme_count", "created_at"],
        mpi_id=_STR, first_name=_STR, last_name=_STR, date_of_birth=_STR_OR_NULL, gender={"enum": ["M", "F", "U", None]},
        region_code=_STR, programme_count=_INT, created_at=_TIME)}),
    "get_identity": _IDENTITY,
    "patch_identity": _IDENTITY,
    "match": _object(["matches"], matches={"type": "array", "items": _object(
        ["mpi_id", "similarity_score", "matched_fields", "confidence"],
        mpi_id=_STR, similarity_score={"type": "number"}, matched_fields={"type": "array", "items": _STR},
        confidence={"enum": ["certain", "probable", "possible", "unlikely"]})}),
    "merge": _object(["canonical_mpi_id", "merged_mpi_id", "merged_at", "programmes_migrated"],
                     canonical_mpi_id=_STR, merged_mpi_id=_STR, merged_at=_TIME, programmes_migrated=_INT),
    "unmerge": _object(["mpi_id", "previous_canonical_mpi_id", "status", "unmerged_at"],
                       mpi_id=_STR, previous_canonical_mpi_id=_STR, status=_STR, unmerged_at=_TIME),
    "qr_config": _object(["enabled", "position", "size", "token_type"], enabled={"type": "boolean"},
                         position={"enum": ["bottom-right", "bottom-left", "top-right", "top-left"]},
                         size={"enum": ["small", "standard", "large"]}, token_type=_STR),
    "verify_card": _object(["status", "verified_at"], status={"enum": ["valid", "revoked"]},
                           programme_count=_INT, verified_at=_TIME),
    "resolve_dhis2": _object(["dhis2_uid", "mpi_id", "resolved_at"], dhis2_uid=_STR, mpi_id=_STR, resolved_at=_TIME),
    "link_dhis2": _object(["mpi_id", "dhis2_uid", "linked_at"], mpi_id=_STR, dhis2_uid=_STR, linked_at=_TIME),
    "enrol_programme": _object(["mpi_id", "programme_type", "linked_at", "programme_count"],
                               mpi_id=_STR, programme_type=_STR, linked_at=_TIME, programme_count=_INT),
    "issue_card": {**_CARD, "required": [*_CARD["required"], "programme_type", "qr_token", "verify_path"]},
    "get_card": _CARD,
    "revoke_card": _CARD,
    "list_audit": _object(["total", "items"], total=_INT, items={"type": "array", "items": _object(
        ["id", "at", "actor", "action", "mpi_id", "detail"],
        id=_INT, at=_STR, actor=_STR, action=_STR, mpi_id=_STR_OR_NULL, detail={"type": "object"})}),
    "list_review_items": _object(["total", "counts", "items"], total=_INT, counts={"type": "object"}, items=_PAGE),
    "decide_review_item": {"type": "object"},
    "list_nodes": _object(["nodes"], nodes=_PAGE),
    "sync_status": _object(["node_id", "enrolled", "cursors", "pending_changes"], node_id=_STR,
                           enrolled={"type": "boolean"}, cursors={"type": "object"}, pending_changes=_INT),
    "sync_now": _object(["status"], status=_STR),
    "register_node": {"type": "object"},
}
_BINARY = {"push", "pull"}  # signed change sets in and out: application/octet-stream
_TEXT = {"metrics"}  # the Prometheus text format

_HEALTH = _object(["status", "role", "node_id", "database"], status={"const": "ok"}, role={"enum": ["node", "hub"]},
                  node_id=_STR, database={"const": "ok"}, matcher=_STR,
                  sync=_object(["enrolled", "pending_changes", "behind", "last_success", "last_error"],
                               enrolled={"type": "boolean"}, pending_changes=_INT, behind={"type": "boolean"},
                               last_success=_STR_OR_NULL, last_error=_STR_OR_NULL))


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def retry_after_header() -> dict[str, Any]:
    return {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}}


def statuses_of(route: Route) -> list[int]:
    """Every status the route can answer: its own, and those the middlewares add."""
    codes = set(route.statuses)
    codes.add(400)  # a control character in a path or query value
    if route.body is not None or route.method in ("POST", "PATCH", "PUT"):
        codes |= {408, 413}  # a body too slow or too large
    if route.role is not None:
        codes |= {401, 403, 429}  # no token, a role too low, too many failed attempts
    if route.rate_limit is not None:
        codes.add(429)
    if "{" in route.path and route.role is not None:
        codes.add(404)
    return sorted(codes)


def _responses(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {}
    name = route.handler.__name__
    for code in statuses_of(route):
        if code >= 400:
            response = _json(_VERIFY_NOT_FOUND if (name == "verify_card" and code == 404) else _ERROR, "error")
            if code == 429:
                response["headers"] = retry_after_header()
            out[str(code)] = response
        elif name in _TEXT:
            out[str(code)] = {"description": "Prometheus text exposition format 0.0.4",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}
        elif name in _BINARY:
            out[str(code)] = {"description": "signed reply parts", "content": {"application/octet-stream": {}}}
        else:
            out[str(code)] = _json(_ANSWERS.get(name, {"type": "object"}), "success")
    return out


def openapi_document(routes: Sequence[Route], role: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` for a server of ``role`` (node or hub)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": _responses(route),
        }
        if route.role is None:
            operation["security"] = []
        else:
            operation["x-required-role"] = route.role
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": _PATH_PARAMETERS.get(name, {"type": "string"})}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        if route.query is not None:
            schema = route.query.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, prop in schema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": False, "schema": prop})
        if params:
            operation["parameters"] = params
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": route.body.model_json_schema()}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths["/health"] = {
        "get": {
            "summary": "Whether this server can work: its database answers (public)",
            "operationId": "health",
            "security": [],
            "responses": {"200": _json(_HEALTH, "it can work"), "503": _json(_ERROR, "it cannot")},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"MPI ({role})", "version": "0.1.0"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
