"""The comparison features of one query against a candidate set (shared.matching.features)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from shared.matching import NameFrequencies, Person
from shared.matching.features import FEATURES, FS_FEATURES, features, pair_features

D = dt.date


def f(x: np.ndarray, name: str, row: int = 0) -> float:
    return float(x[row, FEATURES.index(name)])


def nan(v: float) -> bool:
    return math.isnan(v)


Q = Person("Fatou", "Diallo", D(1990, 3, 11), "F", "DKR", "+221771234567")


def test_shape_and_empty_set() -> None:
    assert features(Q, []).shape == (0, len(FEATURES))
    x = features(Q, [Q, Q])
    assert x.shape == (2, len(FEATURES)) and x.dtype == np.float64
    assert len(set(FEATURES)) == len(FEATURES)


def test_identical_pair() -> None:
    x = features(Q, [Q])
    for p in ("ff", "ll"):
        assert f(x, f"{p}_jw") == 1.0 and f(x, f"{p}_eq") == 1.0 and f(x, f"{p}_ed") == 0.0
        assert f(x, f"{p}_ph") == 1.0 and f(x, f"{p}_tok") == 1.0
    assert f(x, "fl_eq") == 0.0 and f(x, "lf_eq") == 0.0
    assert f(x, "dob_exact") == 1.0 and f(x, "dob_year_diff") == 0.0 and f(x, "dob_abs_days") == 0.0
    assert f(x, "sex_eq") == 1.0 and f(x, "region_eq") == 1.0 and f(x, "phone_eq") == 1.0
    assert f(x, "full_sort") == 1.0 and f(x, "dob_dm_swapped") == 0.0


def test_swapped_names_agree_crossed() -> None:
    x = features(Q, [Person("Diallo", "Fatou", Q.date_of_birth)])
    assert f(x, "ff_eq") == 0.0 and f(x, "ll_eq") == 0.0
    assert f(x, "fl_eq") == 1.0 and f(x, "lf_eq") == 1.0
    assert f(x, "full_sort") == 1.0  # the whole name, tokens sorted, is the same
    assert f(x, "ff_jw") < 0.7


def test_typo_and_phonetic_variant() -> None:
    x = features(Q, [Person("Fatpu", "Diallo"), Person("Fatou", "Dialo"), Person("Fatou", "Jallow")])
    assert f(x, "ff_ed", 0) == 1.0 and f(x, "ff_eq", 0) == 0.0 and f(x, "ff_jw", 0) > 0.85
    # doubled letters are squeezed: Diallo and Dialo are the same flat spelling
    assert f(x, "ll_eq", 1) == 1.0
    assert f(x, "ll_ed", 2) >= 2.0


def test_compound_name_overlap() -> None:
    q = Person("Mame Diarra", "Ndiaye")
    x = features(q, [Person("Diarra", "Ndiaye"), Person("Awa", "Ndiaye")])
    assert f(x, "ff_tok", 0) == 1.0  # every token of the shorter name is in the longer
    assert f(x, "ff_tok", 1) == 0.0
    assert f(x, "name_tokens_q", 0) == 3.0 and f(x, "name_tokens_c", 0) == 2.0


def test_birth_date_structure() -> None:
    cands = [
        Person("Fatou", "Diallo", D(1990, 11, 3)),  # day and month swapped
        Person("Fatou", "Diallo", D(1990, 1, 1)),  # placeholder, same year
        Person("Fatou", "Diallo", D(1991, 3, 11)),  # year off by one
        Person("Fatou", "Diallo", None),  # missing
        Person("Fatou", "Diallo", D(1990, 7, 1)),  # the other placeholder
    ]
    x = features(Q, cands)
    assert f(x, "dob_dm_swapped", 0) == 1.0 and f(x, "dob_exact", 0) == 0.0 and f(x, "dob_year_diff", 0) == 0.0
    assert f(x, "dob_placeholder_c", 1) == 1.0 and f(x, "dob_placeholder_q", 1) == 0.0
    assert f(x, "dob_dm_swapped", 1) == 0.0
    assert f(x, "dob_year_diff", 2) == -1.0 and f(x, "dob_same_month", 2) == 1.0 and f(x, "dob_same_day", 2) == 1.0
    assert f(x, "dob_missing_c", 3) == 1.0 and f(x, "dob_missing_q", 3) == 0.0
    for name in ("dob_exact", "dob_year_diff", "dob_abs_days", "dob_dm_swapped", "dob_placeholder_c"):
        assert nan(f(x, name, 3)), name
    assert f(x, "dob_placeholder_c", 4) == 1.0
    # the query's own missing date: every date comparison is missing, never "different"
    y = features(Person("Fatou", "Diallo"), cands[:2])
    assert f(y, "dob_missing_q") == 1.0 and nan(f(y, "dob_exact")) and nan(f(y, "age_q"))


def test_missing_sex_region_phone_are_missing_not_different() -> None:
    x = features(Q, [Person("Fatou", "Diallo", gender="U"), Person("Fatou", "Diallo", None, "M", "THS", "+221779999999")])
    assert nan(f(x, "sex_eq", 0)) and nan(f(x, "region_eq", 0)) and nan(f(x, "phone_eq", 0))
    assert f(x, "sex_eq", 1) == 0.0 and f(x, "region_eq", 1) == 0.0 and f(x, "phone_eq", 1) == 0.0
    # the same subscriber with or without the country code
    y = features(Q, [Person("A", "B", phone_number="771234567")])
    assert f(y, "phone_eq") == 1.0


def test_external_ids() -> None:
    q = Person("Fatou", "Diallo", external_ids={"dhis2_uid": "abcDEF12345"})
    x = features(q, [
        Person("Fatou", "Diallo", external_ids={"dhis2_uid": "abcDEF12345"}),
        Person("Fatou", "Diallo", external_ids={"dhis2_uid": "zzzDEF12345"}),
        Person("Fatou", "Diallo"),
    ])
    assert f(x, "ext_eq", 0) == 1.0 and f(x, "ext_eq", 1) == 0.0 and nan(f(x, "ext_eq", 2))


def test_name_frequencies_both_sides() -> None:
    people = [Person("Mamadou", "Diallo", D(1960 + i % 40, 1 + i % 12, 1 + i % 28)) for i in range(150)]
    people += [Person(f"Rare{i}", f"Name{i}") for i in range(60)]
    freq = NameFrequencies.from_people(people)
    q = Person("Mamadou", "Diallo")
    x = features(q, [Person("Mamadou", "Diallo"), Person("Rare1", "Name1")], freq)
    assert f(x, "freq_first_q", 0) == f(x, "freq_first_q", 1)  # the query's side is the same for every row
    assert f(x, "freq_first_c", 0) > f(x, "freq_first_c", 1)
    assert f(x, "freq_last_c", 0) > f(x, "freq_last_c", 1)
    assert f(x, "freq_full_c", 0) > f(x, "freq_full_c", 1)
    assert nan(f(features(q, [q]), "freq_first_q"))  # no frequencies: missing


def test_place_in_the_set() -> None:
    cands = [Person("Fatou", "Diallo"), Person("Awa", "Diallo"), Person("Fatou", "Diallo")]
    fs = np.zeros((3, len(FS_FEATURES)))
    fs[:, 0] = [10.0, -3.0, 12.0]
    x = features(Q, cands, fs_parts=fs)
    assert [f(x, "set_rank", i) for i in range(3)] == [1.0, 2.0, 0.0]
    assert [f(x, "set_gap", i) for i in range(3)] == [-2.0, -15.0, 2.0]
    assert f(x, "set_size") == 3.0 and f(x, "set_close") == 2.0
    assert f(x, "fs_total", 2) == 12.0
    alone = features(Q, cands[:1], fs_parts=fs[:1])
    assert f(alone, "set_gap") == 40.0 and f(alone, "set_rank") == 0.0
    # without the FS evidence, its columns are missing
    assert nan(f(features(Q, cands), "fs_total"))


def test_a_set_at_once_equals_each_pair_alone() -> None:
    cands = [
        Person("Diallo", "Fatou", D(1990, 11, 3), "F"),
        Person("Fatoumata", "Dialo", None, "M", "THS"),
        Person("Awa", "Ba", D(1970, 1, 1), None, "DKR", "+221771234567"),
    ]
    whole = features(Q, cands)
    context = [FEATURES.index(n) for n in ("set_size", "set_close", "phone_holders")]
    for i, c in enumerate(cands):
        alone = features(Q, [c])
        keep = [j for j in range(len(FEATURES)) if j not in context]
        np.testing.assert_array_equal(whole[i, keep], alone[0, keep])


@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_name_is_missing(name: str) -> None:
    x = features(Person(name, "Diallo"), [Q])
    assert nan(f(x, "ff_jw")) and nan(f(x, "fl_eq")) and f(x, "ll_eq") == 1.0


def test_registry_size() -> None:
    people = [Person(f"Name{i}", f"Last{i % 7}") for i in range(1000)]
    x = features(Q, [Q], NameFrequencies.from_people(people))
    assert f(x, "registry_size") == pytest.approx(3.0)
    assert nan(f(features(Q, [Q]), "registry_size"))  # no frequencies: missing


def test_an_estimated_date_is_compared_with_a_tolerance_never_exactly() -> None:
    child = Person("Awa", "Sow", D.today() - dt.timedelta(days=400), "F", date_of_birth_estimated=True)
    same = Person("Awa", "Sow", child.date_of_birth, "F")
    later = Person("Awa", "Sow", child.date_of_birth - dt.timedelta(days=100), "F", date_of_birth_estimated=True)
    far = Person("Awa", "Sow", child.date_of_birth - dt.timedelta(days=500), "F", date_of_birth_estimated=True)
    x = features(child, [same, later, far])
    assert [f(x, "dob_estimated", i) for i in range(3)] == [1.0, 2.0, 2.0]
    # a child over 1 year old: a tolerance of 183 days
    assert f(x, "dob_est_gap", 0) == 0.0 and f(x, "dob_est_gap", 1) == pytest.approx(100 / 183)
    assert f(x, "dob_est_gap", 2) > 2.0
    for name in ("dob_exact", "dob_same_month", "dob_same_day", "dob_dm_swapped"):
        assert nan(f(x, name, 0)), name  # never an exact agreement
    assert f(x, "dob_abs_days", 1) == 100.0  # the distance stays
    exact = features(Q, [Q])
    assert f(exact, "dob_estimated") == 0.0 and nan(f(exact, "dob_est_gap")) and f(exact, "dob_exact") == 1.0


def test_mothers() -> None:
    q = Person("Awa", "Sow", mother_mpi_id="MOTHER-1")
    x = features(q, [Person("Awa", "Sow", mother_mpi_id="MOTHER-1"), Person("Awa", "Sow", mother_mpi_id="MOTHER-2"),
                     Person("Awa", "Sow")])
    assert [f(x, "same_mother", i) for i in range(2)] == [1.0, 0.0] and nan(f(x, "same_mother", 2))
    assert [f(x, "mother_links", i) for i in range(3)] == [2.0, 2.0, 1.0]
    unlinked = features(Person("Awa", "Sow"), [Person("Awa", "Sow", mother_mpi_id="MOTHER-1")])
    assert nan(f(unlinked, "same_mother")) and f(unlinked, "mother_links") == 1.0


def test_phone_holders_in_the_set() -> None:
    home = "+221771234567"
    x = features(Q, [Person("Awa", "Diallo", phone_number=home), Person("Fatou", "Diallo", phone_number=home),
                     Person("Fatou", "Diallo", phone_number="+221779999999"), Person("Fatou", "Diallo")])
    assert f(x, "phone_holders") == 2.0 and f(x, "phone_holders", 3) == 2.0
    assert nan(f(features(Person("Fatou", "Diallo"), [Q]), "phone_holders"))  # no phone on the query


def test_many_query_sets_at_once_equal_each_set_alone() -> None:
    """``pair_features`` over several query groups, rows of a group interleaved with others',
    gives every row what ``features(query, its set)`` gives it, set columns included."""
    people = [
        Q,
        Person("Diallo", "Fatou", D(1990, 11, 3), "F"),
        Person("Fatoumata", "Dialo", None, "M", "THS"),
        Person("Awa", "Ba", D(1970, 1, 1), None, "DKR", "+221771234567", {"dhis2_uid": "abcDEF12345"}),
        Person("Mame Diarra", "Ndiaye", D(1970, 1, 1), "F", " dkr "),
        Person("", "Ba", D(1971, 1, 1)),
        Person("Awa", "Ba", D(1970, 1, 1), "F", external_ids={"dhis2_uid": "zzzDEF12345"}),
    ]
    sets = {0: [1, 2, 3, 6], 3: [4, 5, 6], 4: [0], 5: [3, 4]}
    freq = NameFrequencies.from_people(people * 20)
    rng = np.random.default_rng(3)
    rows = [(q, c) for q, cs in sets.items() for c in cs]
    order = rng.permutation(len(rows))
    left = np.array([rows[i][0] for i in order])
    right = np.array([rows[i][1] for i in order])
    fs_total = {(q, c): float(rng.integers(-5, 5)) for q, c in rows}  # ties included
    fs = np.zeros((len(rows), len(FS_FEATURES)))
    fs[:, 0] = [fs_total[(int(q), int(c))] for q, c in zip(left, right, strict=True)]
    x = pair_features(people, left, right, left * 10, freq, fs)  # any labels name the groups
    for q in sets:
        at = [i for i in range(len(left)) if left[i] == q]
        mine = [int(right[i]) for i in at]  # the set in the order its rows came
        alone = features(people[q], [people[c] for c in mine], freq, fs[at])
        np.testing.assert_array_equal(x[at], alone)
    assert {f(x, "set_size", i) for i in range(len(left)) if left[i] == 0} == {4.0}
