"""The campaign comparisons (``shared.matching.family``) and how the scorer uses them: pure, no database."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from shared.matching import Matcher, Person
from shared.matching.family import (
    birth_date_tolerance_days,
    estimated_birth_date,
    estimated_dob_agreement,
    mother_agreement,
    mother_of,
    twins,
)

TODAY = dt.date.today()
ON = dt.date(2026, 3, 31)


def test_an_age_gives_the_middle_of_its_interval() -> None:
    # 3 years old on 2026-03-31: born 2022-04-01 .. 2023-03-31, the middle about 2022-09-30.
    assert estimated_birth_date(ON, age_years=3) == dt.date(2022, 9, 30)
    assert estimated_birth_date(ON, age_years=0) == dt.date(2025, 9, 30)
    # 1 month old: born 2026-01-31 .. 2026-02-28 (the day clamped to February), the middle 15 days before.
    assert estimated_birth_date(ON, age_months=1) == dt.date(2026, 2, 28) - dt.timedelta(days=15)
    with pytest.raises(ValueError):
        estimated_birth_date(ON)


def test_the_tolerance_grows_with_the_age() -> None:
    ages = [dt.timedelta(days=d) for d in (100, 800, 3000, 20000)]
    tolerances = [birth_date_tolerance_days(TODAY - a, TODAY) for a in ages]
    assert tolerances == sorted(tolerances) and tolerances[0] == 92 and tolerances[-1] == 731


def test_estimated_dates_agree_within_their_tolerance_only() -> None:
    infant = TODAY - dt.timedelta(days=200)
    assert estimated_dob_agreement(infant, infant, True, False, TODAY) == "close"
    assert estimated_dob_agreement(infant, infant + dt.timedelta(days=80), True, True, TODAY) == "within"
    assert estimated_dob_agreement(infant, infant + dt.timedelta(days=150), True, True, TODAY) == "near"
    assert estimated_dob_agreement(infant, infant + dt.timedelta(days=400), True, True, TODAY) == "far"
    adult = dt.date(1980, 6, 1)
    assert estimated_dob_agreement(adult, dt.date(1981, 5, 1), True, False, TODAY) == "close"
    assert estimated_dob_agreement(adult, adult, False, False, TODAY) is None  # exact dates: the scorer's levels
    assert estimated_dob_agreement(adult, None, True, False, TODAY) is None


def test_mothers_and_twins() -> None:
    assert mother_agreement("A", "A") is True and mother_agreement("A", "B") is False
    assert mother_agreement(None, "A") is None
    d = dt.date(2024, 5, 1)
    assert twins("A", "A", d, d, sexes_differ=True, given_names_differ=False)
    assert not twins("A", "B", d, d, sexes_differ=True, given_names_differ=True)
    assert not twins("A", "A", d, d + dt.timedelta(days=1), sexes_differ=True, given_names_differ=True)
    assert not twins("A", "A", d, d, sexes_differ=False, given_names_differ=False)
    assert mother_of('[{"mpi_id":"X","relationship":"guardian"},{"mpi_id":"M","relationship":"mother"}]') == "M"
    assert mother_of(None) is None and mother_of("not json") is None


CHILD = Person(
    first_name="Moussa", last_name="Diop", date_of_birth=TODAY - dt.timedelta(days=540), gender="M",
    region_code="DKR", date_of_birth_estimated=True, mother_mpi_id="SN-DKR-26-MOTHER",
)


def test_an_estimate_is_never_an_exact_agreement() -> None:
    m = Matcher()
    exact = replace(CHILD, date_of_birth_estimated=False, mother_mpi_id=None)
    same_exact = m.compare(exact, exact)
    same_estimated = m.compare(replace(CHILD, mother_mpi_id=None), replace(CHILD, mother_mpi_id=None))
    assert "date_of_birth" in same_exact.matched_fields
    assert "date_of_birth" not in same_estimated.matched_fields
    assert "date_of_birth_estimated" in same_estimated.matched_fields
    assert same_estimated.score < same_exact.score
    # Four months apart on an 18-month-old: within the tolerance, still evidence for.
    later = replace(CHILD, date_of_birth=CHILD.date_of_birth + dt.timedelta(days=120), mother_mpi_id=None)
    far = replace(CHILD, date_of_birth=CHILD.date_of_birth + dt.timedelta(days=500), mother_mpi_id=None)
    assert m.evidence_bits(replace(CHILD, mother_mpi_id=None), later) > m.evidence_bits(replace(CHILD, mother_mpi_id=None), far)


def test_the_mother_weighs_for_and_against() -> None:
    m = Matcher()
    unknown = replace(CHILD, mother_mpi_id=None)
    same = m.evidence_bits(CHILD, CHILD)
    none = m.evidence_bits(unknown, unknown)
    other = m.evidence_bits(CHILD, replace(CHILD, mother_mpi_id="SN-DKR-26-OTHER"))
    assert same > none > other
    assert "mother" in m.compare(CHILD, CHILD).matched_fields


def test_twins_of_one_mother_stay_below_certain() -> None:
    m = Matcher()
    sister = replace(CHILD, first_name="Awa", gender="F")
    result = m.compare(CHILD, sister)
    assert result.hard_conflict == "twin_same_mother" and result.score < m.thresholds.certain
    # Same sex, names one letter apart (Ousmane / Ousmana): still twins by the given name? no,
    # close names are the same child; a different given name is what tells twins apart.
    brother = replace(CHILD, first_name="Assane")
    assert m.compare(CHILD, brother).hard_conflict == "twin_same_mother"


def test_a_newborn_without_a_name_is_matched_on_mother_family_name_and_date() -> None:
    m = Matcher()
    baby = replace(CHILD, first_name="", date_of_birth=TODAY - dt.timedelta(days=10))
    again = replace(baby, date_of_birth=TODAY - dt.timedelta(days=25))
    assert m.compare(baby, again).band == "certain"
    assert m.compare(baby, replace(again, mother_mpi_id="SN-DKR-26-OTHER")).band != "certain"


def test_the_learned_scorer_weighs_campaign_pairs_with_its_trees() -> None:
    from shared.matching import NameFrequencies, matcher_of

    learned = matcher_of("learned", NameFrequencies())
    later = replace(CHILD, date_of_birth=CHILD.date_of_birth + dt.timedelta(days=100))
    same = learned.compare(CHILD, later)
    assert same.band == "certain"
    # the trees' score, with what carried it (the Fellegi-Sunter fallback is gone)
    assert same.features and "mother" in same.matched_fields
    other = learned.compare(CHILD, replace(later, mother_mpi_id="SN-DKR-26-OTHER"))
    assert other.score < learned.thresholds.certain
    sister = replace(CHILD, first_name="Awa", gender="F")
    twin = learned.compare(CHILD, sister)
    assert twin.hard_conflict == "twin_same_mother" and twin.score < learned.thresholds.certain


def test_links_from_another_replica_are_stored_well_formed_or_not_at_all() -> None:
    """What a crafted change could send as ``related_persons``: never text a later read trips on."""
    from shared.identities.fields import db_value, related_list

    good = '[{"mpi_id":"SN-DKR-26-M","relationship":"mother"}]'
    assert db_value("related_persons", good) == good
    assert db_value("related_persons", '{"not json') is None
    assert db_value("related_persons", [{"mpi_id": "X", "relationship": "mother"}]) is None
    assert db_value("related_persons", '[{"mpi_id":"X","relationship":"owner"},{"mpi_id":7,"relationship":"mother"}]') is None
    assert related_list('[{"mpi_id":"X"}, "junk"]') == []
