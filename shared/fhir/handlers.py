"""FHIR handlers under /fhir: each parses the FHIR request, calls ``FhirService``, answers FHIR."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from multidict import MultiDict, MultiMapping

from ..api.http import actor
from ..errors import BadRequest, Forbidden
from ..keys import registry_key, settings_key, store_key
from ..schemas import MatchIn, PatchIn, RegisterIn, decode_json
from .capability import capability_statement
from .outcome import Unprocessable, UnsupportedMediaType, fhir_response
from .resources import (
    EXPRESSION,
    MATCH_GRADE,
    Systems,
    bundle,
    check_text,
    demographics,
    patient,
    pix_parameters,
    validated,
)
from .search import Criteria, parse_search
from .service import FhirService, Match, Record, normalise_id

__all__ = [
    "capability",
    "create_patient",
    "match_patients",
    "pix_query",
    "read_patient",
    "search_patients",
    "search_patients_post",
    "update_patient",
]

_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_GRADE = {"certain": "certain", "probable": "probable", "possible": "possible", "unlikely": "certainly-not"}
_MAX_MATCHES = 50  # as /mpi/match's limit


def _systems(request: web.Request) -> Systems:
    s = request.app[settings_key]
    return Systems(s.fhir_mpi_id_system, s.fhir_dhis2_system, s.fhir_identifier_base)


def _service(request: web.Request) -> FhirService:
    return FhirService(request.app[registry_key], _systems(request))


def _base(request: web.Request) -> str:
    """The FHIR base URL: ``MPI_FHIR_BASE_URL``, or this request's own scheme and host."""
    configured = request.app[settings_key].fhir_base_url.rstrip("/")
    return (configured or f"{request.scheme}://{request.host}") + "/fhir"


async def _resource(request: web.Request) -> Any:
    """The request's FHIR JSON body (400 malformed, 415 another media type, 413 too large).

    Decoded by the native API's one decoder (``decode_json``): FHIR refuses what
    ``/mpi/...`` refuses (NaN, Infinity, integers of thousands of digits, deep nesting), 400
    ``invalid_json``.
    """
    declared = request.headers.get("Content-Type")
    if declared is not None and declared.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise UnsupportedMediaType(f"send FHIR JSON (application/fhir+json), not {declared.split(';')[0]}")
    raw = await request.read()
    if not raw:
        raise BadRequest("the request needs a FHIR JSON body", code="invalid_json")
    data = decode_json(raw)
    check_text(data, "the body")
    return data


def _entry(base: str, record: Record, systems: Systems, search: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/Patient/{record.view['mpi_id']}",
        "resource": patient(record.view, systems, replaces=record.replaces, replaced_by=record.replaced_by),
        "search": search,
    }


def _answer(request: web.Request, record: Record, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    resource = patient(record.view, _systems(request), replaces=record.replaces, replaced_by=record.replaced_by)
    return fhir_response(resource, status, headers)


async def capability(request: web.Request) -> web.Response:
    """GET /fhir/metadata (public)"""
    role = request.app[store_key].meta.get("role", "node")
    return fhir_response(capability_statement(_base(request), role))


async def create_patient(request: web.Request) -> web.Response:
    """POST /fhir/Patient"""
    fields = demographics(await _resource(request), _systems(request))
    record = await _service(request).create(validated(RegisterIn, fields), actor(request))
    location = f"{_base(request)}/Patient/{record.view['mpi_id']}"
    return _answer(request, record, 201, {"Location": location})


async def read_patient(request: web.Request) -> web.Response:
    """GET /fhir/Patient/{id}"""
    record = await _service(request).read(request.match_info["id"], actor(request))
    return _answer(request, record)


_REQUIRED_ON_UPDATE = ("first_name", "last_name", "region_code", "country_code")
_REPLACED_ON_UPDATE = ("gender", "date_of_birth", "phone_number")


async def update_patient(request: web.Request) -> web.Response:
    """PUT /fhir/Patient/{id}"""
    url_id = normalise_id(request.match_info["id"])
    resource = await _resource(request)
    fields = demographics(resource, _systems(request))
    body_id = resource.get("id")
    if not isinstance(body_id, str) or body_id.strip().upper() != url_id:
        raise BadRequest(f"the Patient's id must be the id of the URL ({url_id})", code="id_mismatch")
    missing = [f for f in _REQUIRED_ON_UPDATE if f not in fields]
    if missing:
        raise Unprocessable(
            f"an update replaces the Patient: it needs {', '.join(EXPRESSION[f] for f in missing)}",
            issues=[{"message": f"{EXPRESSION[f]} is required", "expression": EXPRESSION[f]} for f in missing],
        )
    # PUT replaces: what the Patient leaves out (phone, gender, birth date) is removed.
    patch = {**{f: fields.get(f) for f in _REPLACED_ON_UPDATE}, **fields}
    record = await _service(request).update(url_id, validated(PatchIn, patch), actor(request))
    headers = {"Content-Location": f"{_base(request)}/Patient/{record.view['mpi_id']}"}
    return _answer(request, record, 200, headers)


def _page_url(request: web.Request, params: MultiMapping[str], criteria: Criteria, offset: int) -> str:
    kept = [(k, v) for k, v in params.items() if k not in ("_offset", "_count")]
    kept += [("_count", str(criteria.count)), ("_offset", str(offset))]
    return f"{_base(request)}/Patient?{urlencode(kept)}"


async def _search(request: web.Request, params: MultiMapping[str]) -> web.Response:
    criteria = parse_search(params, _systems(request))
    total, records = await _service(request).search(criteria, actor(request))
    base, systems = _base(request), _systems(request)
    following = criteria.offset + criteria.count
    next_url = _page_url(request, params, criteria, following) if criteria.count and following < total else None
    return fhir_response(
        bundle(
            (_entry(base, r, systems, {"mode": "match"}) for r in records),
            total=total,
            self_url=_page_url(request, params, criteria, criteria.offset),
            next_url=next_url,
        )
    )


async def search_patients(request: web.Request) -> web.Response:
    """GET /fhir/Patient"""
    return await _search(request, request.query)


async def search_patients_post(request: web.Request) -> web.Response:
    """POST /fhir/Patient/_search (the same search, parameters in a form body)"""
    declared = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if declared != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    # Read here rather than by request.post(): aiohttp answers a form of over 1,000 fields
    # 413 "too large"; the search's own limits (parse_search) answer it 400, as for a query.
    try:
        form = parse_qsl((await request.read()).decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the form is not UTF-8", code="invalid_search") from None
    params: MultiDict[str] = MultiDict(request.query)
    params.extend(form)
    return await _search(request, params)


def _match_parameters(body: Any) -> tuple[Any, bool, int]:
    """(resource, onlyCertainMatches, count) of a $match Parameters."""
    if not isinstance(body, dict):
        raise BadRequest("$match takes a Parameters resource (a JSON object)", code="invalid_resource")
    kind = body.get("resourceType")
    if not isinstance(kind, str):
        raise BadRequest("resourceType is missing", code="invalid_resource")
    if kind != "Parameters":
        raise Unprocessable(f"$match takes a Parameters resource, not {kind}", code="wrong_resource_type")
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
        raise BadRequest("Parameters.parameter must be an array of objects", code="invalid_resource")
    resource, only_certain, count = None, False, 10
    for p in parameters:
        name = p.get("name")
        if name == "resource":
            resource = p.get("resource")
        elif name == "onlyCertainMatches":
            only_certain = p.get("valueBoolean")
            if not isinstance(only_certain, bool):
                raise BadRequest("onlyCertainMatches needs a valueBoolean", code="invalid_resource")
        elif name == "count":
            count = p.get("valueInteger")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise BadRequest("count needs a positive valueInteger", code="invalid_resource")
        else:
            raise BadRequest(f"unknown $match parameter {name!r}", code="invalid_resource")
    if resource is None:
        raise BadRequest("$match needs a 'resource' parameter holding a Patient", code="invalid_resource")
    return resource, only_certain, min(count, _MAX_MATCHES)


def _match_entry(base: str, m: Match, systems: Systems) -> dict[str, Any]:
    grade = {"url": MATCH_GRADE, "valueCode": _GRADE[m.band]}
    return _entry(base, m.record, systems, {"extension": [grade], "mode": "match", "score": m.score})


async def match_patients(request: web.Request) -> web.Response:
    """POST /fhir/Patient/$match"""
    resource, only_certain, count = _match_parameters(await _resource(request))
    systems = _systems(request)
    fields = demographics(resource, systems, strict_identifiers=False)
    matches = await _service(request).match(validated(MatchIn, {**fields, "limit": count}), actor(request))
    base = _base(request)
    entries = [_match_entry(base, m, systems) for m in matches]
    if only_certain:
        certain = [e for e, m in zip(entries, matches, strict=True) if m.band == "certain"]
        # FHIR: with onlyCertainMatches, several possible matches means no answer at all.
        entries = certain if len(certain) == 1 else []
    return fhir_response(bundle(entries, total=len(entries), self_url=f"{base}/Patient/$match"))


def _pix_query(request: web.Request) -> tuple[str, str, list[str]]:
    source: list[str] = []
    targets: list[str] = []
    for key, value in request.query.items():
        check_text(value, key)
        if key == "sourceIdentifier":
            source.append(value)
        elif key == "targetSystem":
            targets.extend(v for v in value.split(",") if v)
        elif key not in ("_format", "_pretty"):
            raise BadRequest(f"unknown $ihe-pix parameter {key}", code="unknown_parameter")
    if len(source) != 1:
        raise BadRequest("$ihe-pix needs exactly one sourceIdentifier=system|value", code="invalid_search")
    system, bar, value = source[0].partition("|")
    if not bar or not system or not value:
        raise BadRequest("sourceIdentifier must be system|value", code="invalid_search")
    return system, value, targets


async def pix_query(request: web.Request) -> web.Response:
    """GET /fhir/Patient/$ihe-pix"""
    system, value, targets = _pix_query(request)
    systems = _systems(request)
    if not systems.known(system):
        raise BadRequest(f"sourceIdentifier Assigning Authority not found: {system}", code="unknown_system")
    unknown = [s for s in targets if not systems.known(s)]
    if unknown:
        # IHE PIXm answers an unknown targetSystem with 403.
        raise Forbidden(f"targetSystem not found: {', '.join(unknown)}", code="unknown_target_system")
    record = await _service(request).resolve(system, value, actor(request))
    return fhir_response(pix_parameters(record.view, systems, targets, (system, value)))
