"""The FHIR route table, ``FHIR_ROUTES``: the same ``Route`` shape as ``shared.routes.ROUTES``.

``build_app`` mounts it on node and hub alike; the auth middleware reads each route's role
from it, and ``fhir_openapi_paths`` describes it in ``/openapi.json``. Fixed paths come
before ``/fhir/Patient/{id}``: the router tries routes in this order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..openapi import retry_after_header, statuses_of
from ..routes import Route
from . import handlers
from .search import SEARCH_PARAMS

__all__ = ["FHIR_ROUTES", "fhir_openapi_paths"]

FHIR_ROUTES: list[Route] = [
    Route("GET", "/fhir/metadata", handlers.capability, None, "FHIR CapabilityStatement (public)"),
    Route("POST", "/fhir/Patient", handlers.create_patient, "registrar", "FHIR create Patient (registration)",
          statuses=(201, 400, 409, 413, 415, 422)),
    Route("GET", "/fhir/Patient", handlers.search_patients, "registrar", "FHIR Patient search (IHE PDQm)",
          statuses=(200, 400)),
    Route("POST", "/fhir/Patient/_search", handlers.search_patients_post, "registrar",
          "FHIR Patient search with a form body (IHE PDQm)", statuses=(200, 400, 413, 415)),
    Route("POST", "/fhir/Patient/$match", handlers.match_patients, "registrar", "FHIR Patient $match (IHE PDQm)",
          statuses=(200, 400, 413, 415, 422)),
    Route("GET", "/fhir/Patient/$ihe-pix", handlers.pix_query, "registrar", "IHE PIXm identifier cross-reference",
          statuses=(200, 400, 403, 404)),
    Route("GET", "/fhir/Patient/{id}", handlers.read_patient, "registrar", "FHIR read Patient",
          statuses=(200, 400, 404)),
    Route("PUT", "/fhir/Patient/{id}", handlers.update_patient, "registrar", "FHIR update Patient (demographics)",
          statuses=(200, 400, 404, 409, 413, 415, 422)),
]

_FHIR_JSON = "application/fhir+json"
_OUTCOME = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {"resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array"}},
}
_RESOURCE = {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}}
_SEARCH_QUERY = [(name, doc) for name, _, _, doc in SEARCH_PARAMS] + [
    ("_count", "page size, 0-200 (default 20)"), ("_offset", "where the page starts, 0-100000 (next links set it)")]
_QUERY: dict[str, list[tuple[str, str]]] = {
    "/fhir/Patient": _SEARCH_QUERY,
    "/fhir/Patient/_search": _SEARCH_QUERY,
    "/fhir/Patient/$ihe-pix": [("sourceIdentifier", "system|value (required)"),
                               ("targetSystem", "identifier system(s) to return; repeatable")],
}


def fhir_openapi_paths(routes: Sequence[Route]) -> dict[str, dict[str, Any]]:
    """OpenAPI path items for the FHIR routes (FHIR JSON bodies, OperationOutcome errors)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        responses: dict[str, Any] = {
            str(code): (
                {"description": "success", "content": {_FHIR_JSON: {"schema": _RESOURCE}}}
                if code < 400
                else {"description": "OperationOutcome", "content": {_FHIR_JSON: {"schema": _OUTCOME}}}
            )
            for code in statuses_of(route)  # the middlewares' statuses too (401, 403, 408, 413, 429...)
        }
        if "429" in responses:
            responses["429"]["headers"] = retry_after_header()
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"fhir_{route.handler.__name__}",
            "tags": ["FHIR R4"],
            "responses": responses,
        }
        if route.role is None:
            operation["security"] = []
        else:
            operation["x-required-role"] = route.role
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        if route.method == "GET" or route.path.endswith("/_search"):
            params += [
                {"name": name, "in": "query", "required": False, "description": doc, "schema": {"type": "string"}}
                for name, doc in _QUERY.get(route.path, [])
            ]
        if params:
            operation["parameters"] = params
        if route.path.endswith("/_search"):
            form = {"type": "object", "properties": {name: {"type": "string"} for name, _ in _SEARCH_QUERY}}
            operation["requestBody"] = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}}
        elif route.method in ("POST", "PUT"):
            operation["requestBody"] = {
                "required": True,
                "content": {_FHIR_JSON: {"schema": _RESOURCE}, "application/json": {"schema": _RESOURCE}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return paths
