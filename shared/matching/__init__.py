"""Record matching for the Master Patient Index: is this registration someone we already know?

Owns the one matcher used by registration (409 at score >= 0.95), ``/mpi/match``, search and
the hub's bulk deduplication.  Modules:

- ``normalize``: canonical text form of names (case, accents, apostrophes, spaces)
- ``phonetic``: West African aware phonetic keys and the table of known variants
- ``blocking``: blocking keys stored per identity and looked up per query
- ``score``: Fellegi-Sunter comparison of two persons into a calibrated probability
- ``frequencies``: name frequencies from the registry itself (common names weigh less)
- ``model``: the ``Person`` value and the ``MatchParams`` that weigh the evidence
- ``em``: estimating ``MatchParams`` from unlabelled candidate pairs (EM) or labelled ones

Nothing here touches a database or HTTP.
"""

from shared.matching.blocking import index_keys, query_keys
from shared.matching.em import estimate
from shared.matching.frequencies import NameFrequencies
from shared.matching.model import MatchParams, Person, default_params, person_of
from shared.matching.normalize import name_tokens, normalize_name
from shared.matching.phonetic import phonetic_key
from shared.matching.score import Matcher, MatchResult, Thresholds

__all__ = [
    "MatchParams",
    "MatchResult",
    "Matcher",
    "NameFrequencies",
    "Person",
    "Thresholds",
    "default_params",
    "estimate",
    "index_keys",
    "name_tokens",
    "normalize_name",
    "person_of",
    "phonetic_key",
    "query_keys",
]
