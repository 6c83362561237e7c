"""FHIR R4 resources to and from the registry's own shapes; no database and no HTTP here.

A Patient is the native identity view (``GET /mpi/{mpi_id}``) in FHIR clothes:

- ``id`` and an ``official`` identifier are the MPI ID; each external id is one more
  identifier (``dhis2_uid`` under the DHIS2 system, any other under ``<base><name>``);
- ``name[0]`` is family = last name, given = [first name]; ``gender`` male/female/unknown
  for M/F/U; ``birthDate``; ``telecom`` the phone; ``address[0]`` state = region code and
  country = country code; ``active``; ``meta.lastUpdated``;
- each programme is one extension ``PROGRAMME_EXTENSION`` (``type`` a code, ``linkedAt``);
- an estimated birth date carries ``BIRTH_DATE_ESTIMATED_EXTENSION`` (valueBoolean true) on
  the ``birthDate`` element itself (``_birthDate.extension``), as DHIS2's "estimated" flag;
- each caregiver link is one extension ``RELATED_PERSON_EXTENSION`` (``relationship`` a code:
  mother, father, guardian, caregiver; ``patient`` a reference to that person's Patient);
- a newborn registered before its naming has no ``given`` name;
- ``link``: ``replaced-by`` the canonical Patient for a merged-away ID, ``replaces`` back.

Reading a Patient that a client sent is strict about what we read (types, codes, dates:
400 when malformed) and says 422 for a well-formed resource we cannot hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from ..errors import BadRequest, ValidationFailed
from ..schemas import parse_body
from .outcome import Unprocessable

__all__ = [
    "EXPRESSION",
    "GENDER_IN",
    "MATCH_GRADE",
    "BIRTH_DATE_ESTIMATED_EXTENSION",
    "PROGRAMME_EXTENSION",
    "RELATED_PERSON_EXTENSION",
    "Systems",
    "bundle",
    "check_text",
    "demographics",
    "patient",
    "pix_parameters",
    "validated",
]

PROGRAMME_EXTENSION = "https://api.oomus.health/fhir/StructureDefinition/programme"
BIRTH_DATE_ESTIMATED_EXTENSION = "https://api.oomus.health/fhir/StructureDefinition/birth-date-estimated"
RELATED_PERSON_EXTENSION = "https://api.oomus.health/fhir/StructureDefinition/related-person"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"

_GENDER_OUT = {"M": "male", "F": "female", "U": "unknown"}
GENDER_IN = {"male": "M", "female": "F", "unknown": "U"}
_FHIR_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
# C0 controls (NUL included), DEL and C1 controls: never part of a name, an id or a code.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# Where each register field sits in a Patient: how a native validation error is located.
EXPRESSION = {
    "first_name": "Patient.name[0].given",
    "last_name": "Patient.name[0].family",
    "date_of_birth": "Patient.birthDate",
    "gender": "Patient.gender",
    "region_code": "Patient.address[0].state",
    "country_code": "Patient.address[0].country",
    "phone_number": "Patient.telecom",
    "external_ids": "Patient.identifier",
}

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Systems:
    """The identifier systems (URIs) of this deployment, from the ``MPI_FHIR_*`` settings."""

    mpi_id: str
    dhis2: str
    base: str  # any other external id system: base + its native name

    def of(self, name: str) -> str:
        """The URI of a native external id system (``dhis2_uid``, ``nin``...)."""
        return self.dhis2 if name == "dhis2_uid" else self.base + name

    def native(self, system: str) -> str | None:
        """The native name of an external id system URI; None for the MPI ID or an unknown one."""
        if system == self.mpi_id:
            return None
        if system == self.dhis2:
            return "dhis2_uid"
        if system.startswith(self.base) and len(system) > len(self.base):
            return system[len(self.base):]
        return None

    def known(self, system: str) -> bool:
        return system == self.mpi_id or self.native(system) is not None


# -- out: registry -> FHIR ----------------------------------------------------------------


def patient(
    view: dict[str, Any], systems: Systems, *, replaces: Sequence[str] = (), replaced_by: str | None = None
) -> dict[str, Any]:
    """The Patient of a native identity view (the shape of ``GET /mpi/{mpi_id}``)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": view["mpi_id"],
        "meta": {"lastUpdated": view["updated_at"]},
    }
    if view["programmes"]:
        resource["extension"] = [
            {
                "url": PROGRAMME_EXTENSION,
                "extension": [
                    {"url": "type", "valueCode": p["programme_type"]},
                    {"url": "linkedAt", "valueDateTime": p["linked_at"]},
                ],
            }
            for p in view["programmes"]
        ]
    related = [
        {
            "url": RELATED_PERSON_EXTENSION,
            "extension": [
                {"url": "relationship", "valueCode": link["relationship"]},
                {"url": "patient", "valueReference": {"reference": f"Patient/{link['mpi_id']}"}},
            ],
        }
        for link in view.get("related_persons") or []
    ]
    if related:
        resource["extension"] = resource.get("extension", []) + related
    resource["identifier"] = [{"use": "official", "system": systems.mpi_id, "value": view["mpi_id"]}] + [
        {"use": "secondary", "system": systems.of(name), "value": value}
        for name, value in sorted(view["external_ids"].items())
    ]
    resource["active"] = view["status"] == "active"
    name: dict[str, Any] = {"use": "official", "family": view["last_name"]}
    if view["first_name"]:
        name["given"] = [view["first_name"]]
    resource["name"] = [name]
    if view["phone_number"]:
        resource["telecom"] = [{"system": "phone", "value": view["phone_number"], "use": "mobile"}]
    if view["gender"]:
        resource["gender"] = _GENDER_OUT[view["gender"]]
    if view["date_of_birth"]:
        resource["birthDate"] = view["date_of_birth"]
        if view.get("date_of_birth_estimated"):
            resource["_birthDate"] = {"extension": [{"url": BIRTH_DATE_ESTIMATED_EXTENSION, "valueBoolean": True}]}
    resource["address"] = [{"use": "home", "state": view["region_code"], "country": view["country_code"]}]
    links = [{"other": {"reference": f"Patient/{replaced_by}"}, "type": "replaced-by"}] if replaced_by else []
    links += [{"other": {"reference": f"Patient/{other}"}, "type": "replaces"} for other in replaces]
    if links:
        resource["link"] = links
    return resource


def bundle(
    entries: Iterable[dict[str, Any]], *, total: int | None, self_url: str, next_url: str | None = None
) -> dict[str, Any]:
    """A ``searchset`` Bundle."""
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        out["total"] = total
    out["link"] = [{"relation": "self", "url": self_url}]
    if next_url:
        out["link"].append({"relation": "next", "url": next_url})
    out["entry"] = list(entries)
    return out


def pix_parameters(
    view: dict[str, Any], systems: Systems, targets: Sequence[str], source: tuple[str, str]
) -> dict[str, Any]:
    """The IHE PIXm answer: the identity's identifiers (but the one asked about) and its Patient."""
    identifiers = [(systems.mpi_id, view["mpi_id"])] + [
        (systems.of(name), value) for name, value in sorted(view["external_ids"].items())
    ]
    parameters: list[dict[str, Any]] = [
        {"name": "targetIdentifier", "valueIdentifier": {"system": system, "value": value}}
        for system, value in identifiers
        if (system, value) != source and (not targets or system in targets)
    ]
    parameters.append({"name": "targetId", "valueReference": {"reference": f"Patient/{view['mpi_id']}"}})
    return {"resourceType": "Parameters", "parameter": parameters}


# -- in: FHIR -> registry -----------------------------------------------------------------


def check_text(value: Any, where: str) -> None:
    """400 for a NUL or another control character anywhere in a string of ``value``."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise BadRequest(f"{where} holds a control character", code="control_character")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_text(item, f"{where}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            check_text(item, f"{where}[{n}]")


def _malformed(message: str, expression: str) -> BadRequest:
    return BadRequest(f"{expression}: {message}", code="invalid_resource",
                      issues=[{"message": message, "expression": expression}])


def _list(resource: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = resource.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _malformed("must be an array of objects", f"Patient.{key}")
    return value


def _string(value: Any, expression: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _malformed("must be a non-empty string", expression)
    return value


def _pick(items: list[dict[str, Any]], preferred: tuple[str, ...]) -> tuple[int, dict[str, Any]] | None:
    for use in preferred:
        for n, item in enumerate(items):
            if item.get("use") == use:
                return n, item
    return (0, items[0]) if items else None


def demographics(resource: Any, systems: Systems, *, strict_identifiers: bool = True) -> dict[str, Any]:
    """The register fields a Patient carries, by native name (only those it has).

    400 when what we read is malformed; 422 for another resource type or a value the
    registry cannot hold (a partial birth date, gender ``other``, an unknown identifier
    system when ``strict_identifiers``).
    """
    if not isinstance(resource, dict):
        raise BadRequest("a Patient must be a JSON object", code="invalid_resource")
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        raise _malformed("resourceType is missing", "Patient.resourceType")
    if kind != "Patient":
        raise Unprocessable(f"expected a Patient resource, not {kind}", code="wrong_resource_type")
    check_text(resource, "Patient")
    fields: dict[str, Any] = {}

    names = _list(resource, "name")
    picked = _pick(names, ("official", "usual"))
    if picked is not None:
        n, name = picked
        family = _string(name.get("family"), f"Patient.name[{n}].family")
        given = name.get("given", [])
        if not isinstance(given, list) or not all(isinstance(g, str) and g.strip() for g in given):
            raise _malformed("must be an array of non-empty strings", f"Patient.name[{n}].given")
        if family is not None:
            fields["last_name"] = family
        if given:
            fields["first_name"] = " ".join(g.strip() for g in given)

    if "gender" in resource:
        gender = resource["gender"]
        if gender not in ("male", "female", "unknown", "other"):
            raise _malformed("must be male, female, other or unknown", "Patient.gender")
        if gender == "other":
            raise Unprocessable("gender 'other' has no value in this registry (male, female or unknown)",
                                issues=[{"message": "gender other is not held", "expression": "Patient.gender"}])
        fields["gender"] = GENDER_IN[gender]

    if "birthDate" in resource:
        birth = resource["birthDate"]
        if not isinstance(birth, str) or not _FHIR_DATE.match(birth):
            raise _malformed("must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)", "Patient.birthDate")
        if len(birth) != 10:
            raise Unprocessable("this registry holds whole birth dates only (YYYY-MM-DD)",
                                issues=[{"message": "partial birth date", "expression": "Patient.birthDate"}])
        fields["date_of_birth"] = birth
        # The estimate flag rides on the element; a PUT that keeps it keeps the estimate.
        birth_ext = resource.get("_birthDate")
        marks = birth_ext.get("extension", []) if isinstance(birth_ext, dict) else []
        fields["date_of_birth_estimated"] = any(
            isinstance(e, dict) and e.get("url") == BIRTH_DATE_ESTIMATED_EXTENSION and e.get("valueBoolean") is True
            for e in marks if isinstance(marks, list)
        )

    related = []
    for e in _list(resource, "extension"):
        if e.get("url") != RELATED_PERSON_EXTENSION:
            continue
        parts = {x.get("url"): x for x in e.get("extension", []) if isinstance(x, dict)}
        reference = (parts.get("patient") or {}).get("valueReference") or {}
        target = reference.get("reference") if isinstance(reference, dict) else None
        code = (parts.get("relationship") or {}).get("valueCode")
        if not isinstance(target, str) or not target.startswith("Patient/") or not isinstance(code, str):
            raise _malformed("needs a relationship code and a Patient reference", "Patient.extension")
        related.append({"mpi_id": target.removeprefix("Patient/"), "relationship": code})
    if related:
        fields["related_persons"] = related

    telecoms = [t for t in _list(resource, "telecom") if t.get("system") == "phone"]
    if telecoms:
        fields["phone_number"] = _string(telecoms[0].get("value"), "Patient.telecom.value")

    addresses = [a for a in _list(resource, "address") if "state" in a or "country" in a]
    picked = _pick(addresses, ("home",))
    if picked is not None:
        n, address = picked
        state = _string(address.get("state"), f"Patient.address[{n}].state")
        country = _string(address.get("country"), f"Patient.address[{n}].country")
        if state is not None:
            fields["region_code"] = state
        if country is not None:
            fields["country_code"] = country

    external: dict[str, str] = {}
    for n, identifier in enumerate(_list(resource, "identifier")):
        system = _string(identifier.get("system"), f"Patient.identifier[{n}].system")
        value = _string(identifier.get("value"), f"Patient.identifier[{n}].value")
        if system is None or value is None:
            raise _malformed("an identifier needs a system and a value", f"Patient.identifier[{n}]")
        native = systems.native(system)
        if native is not None:
            external[native] = value
        elif system != systems.mpi_id and strict_identifiers:
            raise Unprocessable(f"identifier system {system} is not known to this registry",
                                issues=[{"message": f"unknown system {system}",
                                         "expression": f"Patient.identifier[{n}].system"}])
    if external:
        fields["external_ids"] = external
    return fields


def validated(model: type[M], fields: dict[str, Any]) -> M:
    """``fields`` through the native model; its refusals become one 422 naming each element."""
    try:
        return parse_body(model, fields)
    except ValidationFailed as exc:
        issues = []
        for detail in exc.extra.get("details", []):
            field = detail["field"].split(".")[0]
            where = EXPRESSION.get(field, "Patient")
            message = detail["message"]
            if message == "Field required":
                message = f"{where} is required by this registry"
            issues.append({"message": message, "expression": where})
        first = issues[0]["message"] if issues else exc.message
        raise Unprocessable(first, code="validation_error", issues=issues) from None
