"""Blocking keys: plausible duplicates share a key with their query, and buckets stay small."""

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest

from shared.matching.blocking import BUCKET_CAP, index_keys, key_hash, query_keys
from shared.matching.model import Person

D = dt.date


def shares_key(stored: Person, query: Person) -> bool:
    return bool(set(index_keys(stored)) & set(query_keys(query)))


ORIGINAL = Person("Mamadou", "Diallo", D(1990, 3, 11), "M", "DKR", "+221771234567")


def test_keys_are_signed_64_bit_and_deduplicated() -> None:
    keys = index_keys(ORIGINAL)
    assert keys and len(keys) == len(set(keys))
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert key_hash("N|JL|MMD") == key_hash("N|JL|MMD")
    assert len(set(query_keys(ORIGINAL))) == len(query_keys(ORIGINAL))


def _typo_first(p: Person) -> Person:
    return replace(p, first_name="Mamdaou")  # letters swapped, a consonant moved


def _typo_last(p: Person) -> Person:
    return replace(p, last_name="Dillao" if p.last_name == "Diallo" else p.last_name + "x")


# Each error a clerk makes when registering someone twice, as a function of the record.
ERRORS: dict[str, Callable[[Person], Person]] = {
    "typo_first": _typo_first,
    "typo_last": _typo_last,
    "variant_first": lambda p: replace(p, first_name="Mohamadou"),
    "variant_last": lambda p: replace(p, last_name="Jallow"),
    "swap_names": lambda p: replace(p, first_name=p.last_name, last_name=p.first_name),
    "compound_shortened": lambda p: replace(p, first_name=p.first_name.split()[-1]),
    "dob_missing": lambda p: replace(p, date_of_birth=None),
    "dob_placeholder": lambda p: replace(p, date_of_birth=D(p.date_of_birth.year, 1, 1)) if p.date_of_birth else p,
    "dob_swap": lambda p: replace(p, date_of_birth=D(p.date_of_birth.year, p.date_of_birth.day, p.date_of_birth.month))
    if p.date_of_birth
    else p,
    "dob_year": lambda p: replace(p, date_of_birth=D(p.date_of_birth.year + 1, p.date_of_birth.month, p.date_of_birth.day))
    if p.date_of_birth
    else p,
    "dob_day": lambda p: replace(p, date_of_birth=D(p.date_of_birth.year, p.date_of_birth.month, 27))
    if p.date_of_birth
    else p,
    "phone_new": lambda p: replace(p, phone_number="+221705550000"),
    "phone_missing": lambda p: replace(p, phone_number=None),
    "region_move": lambda p: replace(p, region_code="KLK"),
    "gender_missing": lambda p: replace(p, gender=None),
}
# The name errors hit different names: two of them on one name are one (bigger) error.
_SAME_NAME = [{"typo_first", "variant_first", "compound_shortened"}, {"typo_last", "variant_last"}]
_DOB = {e for e in ERRORS if e.startswith("dob_")}

COMPOUND = Person("Mame Mamadou", "Diallo", D(1990, 3, 11), "M", "DKR", "+221771234567")


@pytest.mark.parametrize("error", sorted(ERRORS))
def test_a_duplicate_with_each_single_error_shares_a_key(error: str) -> None:
    for original in (ORIGINAL, COMPOUND):
        duplicate = ERRORS[error](original)
        assert shares_key(original, duplicate), (error, duplicate)
        assert shares_key(duplicate, original), (error, duplicate)


def _pairs_of_errors() -> list[tuple[str, str]]:
    pairs = []
    for a, b in itertools.combinations(sorted(ERRORS), 2):
        if {a, b} <= _DOB or any({a, b} <= same for same in _SAME_NAME):
            continue  # one field written wrong twice is one error
        pairs.append((a, b))
    return pairs


def test_a_duplicate_with_any_two_errors_shares_a_key() -> None:
    """Every pair of error kinds on the same original: the duplicate still shares a key."""
    missed = []
    for a, b in _pairs_of_errors():
        duplicate = ERRORS[b](ERRORS[a](ORIGINAL))
        if not shares_key(ORIGINAL, duplicate):
            missed.append((a, b))
    assert missed == [], missed


def test_keys_survive_a_typo_with_no_birth_date_through_the_region() -> None:
    """A first-name typo and no birth date: the last name, the first initial and the region."""
    duplicate = replace(ORIGINAL, first_name="Mamdaou", date_of_birth=None, phone_number=None)
    assert shares_key(ORIGINAL, duplicate)


def test_compound_first_name_reduced_to_one_token() -> None:
    stored = Person("Ndèye Fatou", "Sène", D(2001, 5, 2), "F", "FTK")
    assert shares_key(stored, Person("Fatou", "Sene", D(2001, 5, 2), "F", "FTK"))
    assert shares_key(stored, Person("Ndeye", "Sene", D(2001, 5, 2)))


def test_stored_identity_without_birth_date_is_found() -> None:
    stored = Person("Aminata", "Coulibaly", None, "F", "SED")
    assert shares_key(stored, Person("Aminata", "Kulibali", D(1975, 6, 1), "F", "KAF"))


REGIONS = ["DKR", "THI", "ZIG", "SLO", "KLK", "TAM", "KAO", "MAT", "LGA", "FTK", "KDG", "SED", "DIO", "KAF"]


def test_common_name_does_not_pull_everyone() -> None:
    """Ten thousand Mamadou Diallos born over sixty years in 14 regions: the name alone is
    skipped (its bucket is over the cap), and what is read is the narrow keys' buckets."""
    buckets: Counter[int] = Counter()
    for i in range(10_000):
        year = 1950 + i % 60
        p = Person("Mamadou", "Diallo", D(year, 1 + i % 12, 1 + i % 28), "M", REGIONS[i % 14])
        buckets.update(index_keys(p))
    q = Person("Mamadou", "Diallo", D(1990, 6, 15), "M", "DKR")
    sizes = [buckets[k] for k in query_keys(q)]
    assert max(sizes) > 1_000  # the whole name is there, and too common to read
    read = sum(n for n in sizes if n <= BUCKET_CAP)
    assert 0 < read <= 1_000


def test_unrelated_people_share_no_key() -> None:
    a = Person("Awa", "Ndiaye", D(1990, 3, 11), "F", "DKR", "+221771111111")
    b = Person("Moussa", "Coulibaly", D(1962, 8, 2), "M", "KAF", "+221772222222")
    assert not shares_key(a, b)


def test_a_query_with_one_name_left_out_still_has_that_name_s_keys() -> None:
    """/mpi/match may be asked with a last name only (or a first name only)."""
    assert shares_key(ORIGINAL, replace(ORIGINAL, first_name="", phone_number=None))
    assert shares_key(ORIGINAL, replace(ORIGINAL, last_name="", phone_number=None, date_of_birth=None))
    assert not [k for k in query_keys(replace(ORIGINAL, first_name="", last_name="", phone_number=None, date_of_birth=None))]
