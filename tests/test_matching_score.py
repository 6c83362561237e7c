"""Scoring: evidence rules, look-alikes, hard conflicts and name frequencies, on real names."""

import datetime as dt
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.matching.model import Person, default_params
from shared.matching.score import Matcher, MatchResult, NameFrequencies, Thresholds

D = dt.date
PHONE = "+221771234567"


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher()


def awa(**changes: object) -> Person:
    base: dict[str, object] = {
        "first_name": "Awa",
        "last_name": "Ndiaye",
        "date_of_birth": D(1990, 3, 14),
        "gender": "F",
        "region_code": "DKR",
        "phone_number": PHONE,
    }
    base.update(changes)
    return Person(**base)  # type: ignore[arg-type]


def test_identical_record_is_certain(matcher: Matcher) -> None:
    r = matcher.compare(awa(), awa())
    assert r.score >= 0.95
    assert r.band == "certain"
    assert r.hard_conflict is None
    assert r.matched_fields == [
        "first_name",
        "last_name",
        "date_of_birth",
        "gender",
        "region_code",
        "phone_number",
    ]


def test_cosmetic_spellings_are_exact_agreement(matcher: Matcher) -> None:
    r = matcher.compare(awa(last_name="N'Diaye"), awa(first_name="AWA", last_name=" ndiaye "))
    assert "first_name" in r.matched_fields and "last_name" in r.matched_fields
    r = matcher.compare(awa(last_name="Sène"), awa(last_name="SENE"))
    assert "last_name" in r.matched_fields
    r = matcher.compare(awa(first_name="Mame Diarra"), awa(first_name="Mame-Diarra"))
    assert "first_name" in r.matched_fields


def test_phonetic_variants_are_found(matcher: Matcher) -> None:
    q = Person("Ousmane", "Coulibaly", D(1985, 6, 2), "M", "SED")
    c = Person("Usman", "Kulibali", D(1985, 6, 2), "M", "SED")
    r = matcher.compare(q, c)
    assert r.matched_fields[:2] == ["first_name_phonetic", "last_name_phonetic"]
    assert r.score >= 0.85
    r2 = matcher.compare(Person("Moussa", "Ouattara", D(2001, 2, 3)), Person("Musa", "Watara", D(2001, 2, 3)))
    assert "last_name_phonetic" in r2.matched_fields
    r3 = matcher.compare(Person("Fatou", "Keïta", D(1999, 9, 9)), Person("Fatoumata", "Keita", D(1999, 9, 9)))
    assert r3.matched_fields[:2] == ["first_name_phonetic", "last_name"]


def test_typo_is_fuzzy_evidence(matcher: Matcher) -> None:
    r = matcher.compare(awa(first_name="Aminata"), awa(first_name="Aminnata"))
    assert "first_name" in r.matched_fields  # doubled letter: the same spelling
    r = matcher.compare(awa(first_name="Aminata"), awa(first_name="Amintaa"))
    assert "first_name_fuzzy" in r.matched_fields
    assert r.score >= 0.95


def test_swapped_first_and_last_name(matcher: Matcher) -> None:
    r = matcher.compare(awa(first_name="Ndiaye", last_name="Awa"), awa())
    assert "names_swapped" in r.matched_fields
    assert r.score >= 0.95


def test_date_of_birth_levels_order_evidence(matcher: Matcher) -> None:
    q = Person("Mariama", "Sow", D(1990, 3, 11), "F", "THI")
    scores = {}
    for label, dob in [
        ("exact", D(1990, 3, 11)),
        ("swapped", D(1990, 11, 3)),
        ("year_off", D(1991, 3, 11)),
        ("year_only", D(1990, 1, 1)),
        ("different", D(1972, 8, 30)),
    ]:
        scores[label] = matcher.compare(q, Person("Mariama", "Sow", dob, "F", "THI"))
    assert "date_of_birth" in scores["exact"].matched_fields
    assert "date_of_birth_day_month_swapped" in scores["swapped"].matched_fields
    assert "date_of_birth_year_off_by_one" in scores["year_off"].matched_fields
    assert "birth_year" in scores["year_only"].matched_fields
    s = {k: v.score for k, v in scores.items()}
    assert s["exact"] > s["swapped"] > s["year_only"] > s["different"]
    assert s["exact"] > s["year_off"] > s["different"]
    assert s["different"] < 0.5


def test_placeholder_dates_count_as_year_only(matcher: Matcher) -> None:
    q = Person("Penda", "Faye", D(1970, 1, 1), "F", "FTK")
    r_jan = matcher.compare(q, Person("Penda", "Faye", D(1970, 1, 1), "F", "FTK"))
    r_real = matcher.compare(q, Person("Penda", "Faye", D(1970, 9, 23), "F", "FTK"))
    r_jul = matcher.compare(Person("Penda", "Faye", D(1970, 7, 1), "F", "FTK"), q)
    # a placeholder is never reported as an agreeing birth date, only as the year
    assert "date_of_birth" not in r_jan.matched_fields
    assert "birth_year" in r_jan.matched_fields and "birth_year" in r_real.matched_fields
    # the same placeholder on both sides is shared by few strangers (1 in ~4,000 random
    # pairs, against 1 in ~270 for "same year, one side a placeholder"): stronger evidence
    # than a known year, weaker than a real date
    assert r_jan.score > r_real.score == r_jul.score
    assert r_jan.score < matcher.compare(awa(), awa()).score
    exact_real = Person("Penda", "Faye", D(1970, 9, 23), "F", "FTK")
    assert r_jan.score < matcher.compare(exact_real, exact_real).score


def test_missing_fields_are_neutral(matcher: Matcher) -> None:
    full = Person("Ibrahima", "Diop", D(1980, 5, 5), "M", "KLK", PHONE)
    no_phone = Person("Ibrahima", "Diop", D(1980, 5, 5), "M", "KLK", None)
    # a missing phone scores as if the phone were never asked, not as a disagreement
    with_missing = matcher.compare(full, no_phone)
    neither = matcher.compare(no_phone, no_phone)
    assert with_missing.score == neither.score
    assert "phone_number" not in with_missing.matched_fields
    disagree = matcher.compare(full, Person("Ibrahima", "Diop", D(1980, 5, 5), "M", "KLK", "+221700000001"))
    assert disagree.score < with_missing.score
    unknown_gender = matcher.compare(
        Person("Ibrahima", "Diop", D(1980, 5, 5), "U", "KLK"),
        Person("Ibrahima", "Diop", D(1980, 5, 5), "M", "KLK"),
    )
    assert (
        unknown_gender.score
        == matcher.compare(
            Person("Ibrahima", "Diop", D(1980, 5, 5), None, "KLK"),
            Person("Ibrahima", "Diop", D(1980, 5, 5), None, "KLK"),
        ).score
    )


def test_twins_are_not_blocked(matcher: Matcher) -> None:
    r = matcher.compare(awa(first_name="Awa"), awa(first_name="Adama"))
    assert r.hard_conflict == "twin"
    assert r.score < 0.95
    r2 = matcher.compare(awa(first_name="Assane", gender="M"), awa(first_name="Ousseynou", gender="M"))
    assert r2.hard_conflict == "twin" and r2.score < 0.95


def test_namesakes_born_years_apart_are_not_duplicates(matcher: Matcher) -> None:
    a = Person("Mamadou", "Diallo", D(1984, 2, 10), "M", "DKR")
    b = Person("Mamadou", "Diallo", D(1996, 11, 2), "M", "DKR")
    r = matcher.compare(a, b)
    assert r.score < 0.5
    assert r.hard_conflict is None


def test_parent_and_child_with_the_same_name(matcher: Matcher) -> None:
    father = Person("Cheikh", "Sarr", D(1962, 4, 4), "M", "THI", PHONE)
    son = Person("Cheikh", "Sarr", D(1990, 4, 4), "M", "THI", PHONE)
    r = matcher.compare(son, father)
    assert r.score < 0.7
    assert r.band is None


def test_sex_and_birth_date_conflict(matcher: Matcher) -> None:
    r = matcher.compare(
        Person("Adama", "Traoré", D(2001, 5, 6), "M", "KAO"),
        Person("Adama", "Traoré", D(2001, 6, 5), "F", "KAO"),
    )
    assert r.hard_conflict == "sex_and_birth_date"
    assert r.score < 0.95
    same_day = matcher.compare(
        Person("Adama", "Traoré", D(2001, 5, 6), "M"), Person("Adama", "Traoré", D(2001, 5, 6), "F")
    )
    assert same_day.hard_conflict is None


def test_dhis2_uid(matcher: Matcher) -> None:
    a = Person("Aminata", "Diarra", D(1995, 1, 20), "F", external_ids={"dhis2_uid": "abcDEF123gh"})
    same = matcher.compare(
        a, Person("Aminata", "Jarra", None, None, external_ids={"dhis2_uid": "abcDEF123gh"})
    )
    assert "dhis2_uid" in same.matched_fields
    assert same.score >= 0.95
    other = matcher.compare(
        a, Person("Aminata", "Diarra", D(1995, 1, 20), "F", external_ids={"dhis2_uid": "zzzYYY999xx"})
    )
    assert other.hard_conflict == "dhis2_uid"
    assert other.score < 0.95


def test_common_names_weigh_less_than_rare_ones() -> None:
    freq = NameFrequencies()
    for i in range(500):
        freq.add(Person("Mamadou" if i % 5 else f"Name{i}", "Diallo" if i % 4 else f"Family{i}"))
    freq.add(Person("Bassirou", "Bathily"))
    m = Matcher(frequencies=freq)
    common = m.compare(Person("Mamadou", "Diallo", D(1990, 1, 1)), Person("Mamadou", "Diallo", D(1990, 1, 1)))
    rare = m.compare(
        Person("Bassirou", "Bathily", D(1990, 1, 1)), Person("Bassirou", "Bathily", D(1990, 1, 1))
    )
    assert rare.score > common.score
    assert freq.first_name_share("MAMADOU") == pytest.approx(400 / 501)
    freq.remove(Person("Bassirou", "Bathily"))
    assert freq.last_name_share("BATHILY") == 0.0
    with pytest.raises(KeyError):
        freq.remove(Person("Bassirou", "Bathily"))


def test_rank_orders_and_filters() -> None:
    m = Matcher(thresholds=Thresholds(certain=0.95, probable=0.85, possible=0.70))
    q = awa()
    cands = [
        ("twin", awa(first_name="Adama")),
        ("dup", awa(last_name="N'Diaye", phone_number=None)),
        ("stranger", Person("Moussa", "Coulibaly", D(1950, 1, 1), "M", "KAF")),
    ]
    ranked = m.rank(q, cands)
    assert [k for k, _ in ranked][0] == "dup"
    assert "stranger" not in [k for k, _ in ranked]
    assert all(isinstance(r, MatchResult) for _, r in ranked)
    assert len(m.rank(q, cands, limit=1)) == 1
    assert [k for k, _ in m.rank(q, cands, min_score=0.0)][-1] == "stranger"


def test_scores_are_probabilities_with_bands(matcher: Matcher) -> None:
    r = matcher.compare(awa(), Person("Moussa", "Coulibaly", D(1950, 1, 1), "M", "KAF"))
    assert 0.0 <= r.score < 0.01 and r.band is None
    assert round(r.score, 4) == r.score


def test_default_params_are_shipped() -> None:
    p = default_params()
    assert p.duplicate_share is not None and 0 < p.duplicate_share < 1
    assert p.weight("date_of_birth", 0) > 5  # exact birth date is strong evidence
    assert p.weight("first_name", 5) < 0  # a different first name counts against


def test_compare_is_fast(matcher: Matcher) -> None:
    pairs = [
        (awa(first_name=f"Awa{i % 7}"), awa(first_name="Awa", last_name=f"Ndiay{i % 5}")) for i in range(300)
    ]
    matcher.rank(pairs[0][0], [(i, p) for i, (_, p) in enumerate(pairs)])
    t = time.perf_counter()
    for _ in range(5):
        matcher.rank(pairs[0][0], [(i, p) for i, (_, p) in enumerate(pairs)], limit=10)
    per_rank = (time.perf_counter() - t) / 5
    # A guard against a quadratic slip, not a benchmark (scripts/bench_matcher_core.py measures
    # speed): about 3 ms on an idle machine, and a loaded CI machine must not fail it.
    assert per_rank < 0.100


def test_rare_region_and_sparse_birth_year_weigh_more() -> None:
    freq = NameFrequencies()
    for i in range(600):
        # Dakar is crowded, Sédhiou is not; 2024 is full of babies, 1950 nearly empty
        region = "SED" if i % 50 == 0 else "DKR"
        year = 1950 if i % 60 == 0 else 2024
        freq.add(Person(f"First{i}", f"Last{i}", D(year, 5, 1 + i % 28), "F", region))
    m = Matcher(frequencies=freq)

    def score(region: str, year: int) -> float:
        # the evidence itself: the probability is already saturated at 1.0 for both
        p = Person("Astou", "Sagna", D(year, 3, 9), "F", region)
        return m.evidence_bits(p, p)

    assert score("SED", 2024) > score("DKR", 2024)
    assert score("DKR", 1950) > score("DKR", 2024)


def test_em_recovers_parameters_without_labels() -> None:
    """Pairs drawn from known m/u: EM finds who is who without being told."""
    import random

    from shared.matching.em import estimate
    from shared.matching.model import COMPARISONS, LEVELS, MatchParams

    rng = random.Random(4)
    true_m = {
        "first_name": (0.85, 0.1, 0.05),
        "last_name": (0.9, 0.07, 0.03),
        "date_of_birth": (0.8, 0.15, 0.05),
    }
    true_u = {
        "first_name": (0.03, 0.07, 0.9),
        "last_name": (0.05, 0.05, 0.9),
        "date_of_birth": (0.01, 0.09, 0.9),
    }
    # only three levels used per comparison: exact, phonetic-or-close, else
    level_ids = {"first_name": (0, 1, 5), "last_name": (0, 1, 5), "date_of_birth": (0, 5, 8)}
    vectors = []
    for _ in range(20_000):
        is_match = rng.random() < 0.2
        probs = true_m if is_match else true_u
        vec: list[int | None] = [None] * len(COMPARISONS)
        for i, c in enumerate(COMPARISONS):
            if c in probs:
                vec[i] = level_ids[c][rng.choices(range(3), probs[c])[0]]
        vectors.append(tuple(vec))
    start = MatchParams(
        prior=0.5,
        m={
            c: tuple(1 / len(LEVELS[c]) + (0.3 if k == 0 else 0) for k in range(len(LEVELS[c])))
            for c in COMPARISONS
        },
        u={
            c: tuple(
                1 / len(LEVELS[c]) + (0.3 if k == len(LEVELS[c]) - 1 else 0) for k in range(len(LEVELS[c]))
            )
            for c in COMPARISONS
        },
    )
    fitted = estimate(vectors, init=start)
    assert fitted.prior == pytest.approx(0.2, abs=0.03)
    assert fitted.m["first_name"][0] == pytest.approx(0.85, abs=0.05)
    assert fitted.u["date_of_birth"][8] == pytest.approx(0.9, abs=0.03)
    assert fitted.weight("last_name", 0) > 3 > fitted.weight("last_name", 5)


NAMES = ["Awa", "Adama", "Fatou", "Fatoumata", "Mamadou", "Mamadu", "Diallo", "Jallow", "N'Diaye", "Sène", ""]


@given(
    st.tuples(
        st.sampled_from(NAMES),
        st.sampled_from(NAMES),
        st.one_of(st.none(), st.dates(D(1930, 1, 1), D(2025, 12, 31))),
    ),
    st.tuples(
        st.sampled_from(NAMES),
        st.sampled_from(NAMES),
        st.one_of(st.none(), st.dates(D(1930, 1, 1), D(2025, 12, 31))),
    ),
    st.sampled_from([None, "M", "F", "U"]),
    st.sampled_from([None, "DKR", "ZIG"]),
)
@settings(max_examples=300, deadline=None)
def test_score_is_a_symmetric_probability(
    a: tuple[str, str, dt.date | None],
    b: tuple[str, str, dt.date | None],
    gender: str | None,
    region: str | None,
) -> None:
    m = Matcher()
    p = Person(a[0], a[1], a[2], gender, region)
    q = Person(b[0], b[1], b[2], "F", "DKR")
    r1, r2 = m.compare(p, q), m.compare(q, p)
    assert 0.0 <= r1.score <= 1.0
    assert r1.score == r2.score
    assert r1.hard_conflict == r2.hard_conflict
    if r1.hard_conflict is not None:
        assert r1.score < 0.95


def test_two_common_names_close_in_spelling_are_not_a_typo() -> None:
    # A registry where Amadou and Mamadou are both frequent: one is not a slip for the other.
    people = [
        Person(f, ln, D(1950 + i % 60, 1 + i % 12, 1 + i % 28), "M", "ZIG")
        for i, (f, ln) in enumerate([("Amadou", "Sarr"), ("Mamadou", "Ba"), ("Ousmane", "Fall")] * 60)
    ]
    m = Matcher(frequencies=NameFrequencies.from_people(people))
    q = Person("Amadou", "Dione", D(2013, 1, 19), "M", "ZIG")
    other = m.compare(q, Person("Mamadou", "Dione", D(2013, 1, 19), "M", "ZIG"))
    assert "first_name_fuzzy" not in other.matched_fields
    assert other.hard_conflict == "twin" and other.score < 0.95
    # a typo (a spelling nobody else carries) is still close
    slip = m.compare(q, Person("Amadoi", "Dione", D(2013, 1, 19), "M", "ZIG"))
    assert "first_name_fuzzy" in slip.matched_fields and slip.hard_conflict is None
    # without registry counts there is nothing to tell them apart
    assert (
        "first_name_fuzzy"
        in Matcher().compare(q, Person("Mamadou", "Dione", None, "M", "ZIG")).matched_fields
    )


def test_full_name_frequency_not_the_product_of_two_names() -> None:
    # Anne is rare and Ndong is rare, but Anne Ndong is a family of its own: 30 in 600.
    freq = NameFrequencies()
    for i in range(600):
        if i % 20 == 0:
            freq.add(Person("Anne", "Ndong", D(1950 + i % 50, 1 + i % 12, 1 + i % 28), "F", "FTK"))
        else:
            freq.add(Person(f"First{i % 40}", f"Last{i % 30}", D(1950 + i % 50, 1 + i % 12, 1), "F", "DKR"))
    freq.add(Person("Anne", "Sarr"))
    freq.add(Person("Marie", "Ndong"))
    m = Matcher(frequencies=freq)
    family = Person("Anne", "Ndong", None, "F", "FTK")
    single = Person("Anne", "Sarr", None, "F", "FTK")
    # Anne Sarr (one in the registry) is stronger evidence than Anne Ndong (30)
    assert m.evidence_bits(single, single) > m.evidence_bits(family, family)
    freq.remove(Person("Anne", "Sarr"))
    assert freq.full_name_bits("ANNE", "SARR", 10) == freq.full_name_bits("NOBODY", "ATALL", 10)
