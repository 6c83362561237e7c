"""The OpenAPI 3.1 document of every route, built from the route table and the schemas."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .routes import Route

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "required": ["status", "error"],
    "properties": {"status": {"type": "string"}, "error": {"type": "string"}, "details": {}},
}


def openapi_document(routes: Sequence[Route], role: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                str(code): (
                    {"description": "success"}
                    if code < 400
                    else {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
                )
                for code in route.statuses
            },
        }
        if route.role is None:
            operation["security"] = []
        else:
            operation["x-required-role"] = route.role
            operation["responses"].setdefault("401", {"description": "missing or bad token"})
            operation["responses"].setdefault("403", {"description": "role not allowed"})
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        if route.query is not None:
            schema = route.query.model_json_schema()
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
    return {
        "openapi": "3.1.0",
        "info": {"title": f"MPI ({role})", "version": "0.1.0"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
