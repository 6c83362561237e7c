"""The CapabilityStatement of ``GET /fhir/metadata``: what this server does with Patients."""

from __future__ import annotations

from typing import Any

from .search import SEARCH_PARAMS

__all__ = ["FHIR_VERSION", "capability_statement"]

FHIR_VERSION = "4.0.1"
_PUBLISHED = "2026-12-02"

OPERATIONS = [
    ("match", "http://hl7.org/fhir/OperationDefinition/Patient-match",
     "IHE PDQm $match: a Parameters with resource (a Patient), onlyCertainMatches, count"),
    ("ihe-pix", "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
     "IHE PIXm: sourceIdentifier=system|value [&targetSystem=...]"),
]


def capability_statement(base: str, role: str) -> dict[str, Any]:
    """The server's CapabilityStatement; ``base`` is the FHIR base URL (``.../fhir``)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _PUBLISHED,
        "publisher": "MPI",
        "kind": "instance",
        "instantiates": [
            "https://profiles.ihe.net/ITI/PDQm/CapabilityStatement/IHE.PDQm.Supplier",
            "https://profiles.ihe.net/ITI/PIXm/CapabilityStatement/IHE.PIXm.Manager",
        ],
        "software": {"name": f"MPI {role}", "version": "0.1.0"},
        "implementation": {"description": f"Master Patient Index ({role})", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "description": "Authorization: Bearer <token> (registrar or above) on every interaction "
                    "but this one; the same tokens and roles as the native API.",
                },
                "resource": [
                    {
                        "type": "Patient",
                        "profile": "http://hl7.org/fhir/StructureDefinition/Patient",
                        "interaction": [
                            {"code": "read"},
                            {"code": "create", "documentation": "The native registration: 409 for a duplicate"},
                            {"code": "update", "documentation": "Demographics and identifiers, as PATCH /mpi/{id}"},
                            {"code": "search-type"},
                        ],
                        "versioning": "no-version",
                        "readHistory": False,
                        "updateCreate": False,
                        "conditionalCreate": False,
                        "conditionalUpdate": False,
                        "conditionalDelete": "not-supported",
                        "searchParam": [
                            {"name": name, "definition": definition, "type": kind, "documentation": doc}
                            for name, kind, definition, doc in SEARCH_PARAMS
                        ],
                        "operation": [
                            {"name": name, "definition": definition, "documentation": doc}
                            for name, definition, doc in OPERATIONS
                        ],
                    }
                ],
            }
        ],
    }
