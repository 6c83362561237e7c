"""The HL7 FHIR R4 face of the registry, under /fhir on node and hub: Patient, $match, PIXm, PDQm.

- ``routes``: ``FHIR_ROUTES``, the route table (same ``Route`` shape as the native one)
- ``handlers``: parse FHIR, call the service, answer FHIR
- ``service``: the one adapter into the identity layer (and the few queries it lacks)
- ``resources``: Patient, Bundle, Parameters to and from the registry's shapes
- ``search``: the PDQm search parameters; ``capability``: the CapabilityStatement
- ``outcome``: every error under /fhir as an OperationOutcome (the ``fhir_errors`` middleware)
"""

from .outcome import fhir_errors
from .routes import FHIR_ROUTES, fhir_openapi_paths

__all__ = ["FHIR_ROUTES", "fhir_errors", "fhir_openapi_paths"]
