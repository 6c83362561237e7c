"""Record matching for the Master Patient Index: is this registration someone we already know?

Owns the one matcher used by registration (409 at score >= 0.95), ``/mpi/match``, search and
the hub's bulk deduplication.  Modules:

- ``normalize``: canonical text form of names (case, accents, apostrophes, spaces)
- ``phonetic``: West African aware phonetic keys and the table of known variants
- ``blocking``: blocking keys stored per identity and looked up per query
- ``score``: Fellegi-Sunter comparison of two persons into a calibrated probability
- ``frequencies``: name frequencies from the registry itself (common names weigh less)
- ``model``: the ``Person`` value and the ``MatchParams`` that weigh the evidence
- ``features``: comparison features of a query against a whole candidate set (numpy matrix)
- ``learned``: the gradient-boosted trees over those features (numpy inference, calibrated):
  ``LearnedMatcher``, the scorer every caller uses
- ``em``: estimating ``MatchParams`` from unlabelled candidate pairs (EM) or labelled ones

Nothing here touches a database or HTTP.
"""

from shared.matching.blocking import index_keys, query_keys
from shared.matching.em import estimate
from shared.matching.features import FEATURES, features
from shared.matching.frequencies import NameFrequencies
from shared.matching.learned import LearnedMatcher, LearnedModel, default_model, matcher_of
from shared.matching.model import MatchParams, Person, default_params, person_of
from shared.matching.normalize import name_tokens, normalize_name
from shared.matching.phonetic import phonetic_key
from shared.matching.score import Matcher, MatchResult, Thresholds, evidence_detail

__all__ = [
    "FEATURES",
    "LearnedMatcher",
    "LearnedModel",
    "MatchParams",
    "MatchResult",
    "Matcher",
    "NameFrequencies",
    "Person",
    "Thresholds",
    "default_model",
    "default_params",
    "estimate",
    "evidence_detail",
    "features",
    "matcher_of",
    "index_keys",
    "name_tokens",
    "normalize_name",
    "person_of",
    "phonetic_key",
    "query_keys",
]
