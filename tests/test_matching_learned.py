"""The shipped learned model: numpy inference, calibration, and the scorer built on it."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from shared.matching import (
    FEATURES,
    LearnedMatcher,
    LearnedModel,
    Matcher,
    NameFrequencies,
    Person,
    default_model,
)
from shared.matching.learned import MODEL_FILE

D = dt.date


def _stored() -> dict[str, np.ndarray]:
    ref = resources.files("shared.matching").joinpath(MODEL_FILE)
    with resources.as_file(ref) as path, np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_numpy_inference_equals_the_training_library() -> None:
    """check_x/check_raw were written by scripts/train_matcher.py from scikit-learn's own predictions."""
    model, z = default_model(), _stored()
    raw, _ = model.raw(z["check_x"])
    assert len(raw) >= 100
    np.testing.assert_allclose(raw, z["check_raw"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), z["check_proba"], rtol=0, atol=1e-9)


def test_missing_values_take_the_learned_branch() -> None:
    model = default_model()
    x = np.full((1, len(FEATURES)), np.nan)
    raw, _ = model.raw(x)
    assert np.isfinite(raw).all()


def test_contributions_add_up_to_the_raw_score() -> None:
    model, z = default_model(), _stored()
    raw, contrib = model.raw(z["check_x"][:50], explain=True)
    assert contrib is not None
    np.testing.assert_allclose(contrib.sum(axis=1) + model.baseline + model.mean[:, 0].sum(), raw, atol=1e-9)


def test_calibration_is_monotone_and_a_probability() -> None:
    model = default_model()
    assert np.all(np.diff(model.calib_x) >= 0) and np.all(np.diff(model.calib_y) >= 0)
    grid = np.linspace(-30, 30, 601)
    p = model.probability(grid)
    assert np.all(np.diff(p) >= 0) and p.min() >= 0.0 and p.max() <= 1.0
    assert p[0] < 0.05 and p[-1] > 0.95


def test_versioned_with_its_training_record() -> None:
    model = default_model()
    assert model.version.startswith("learned-")
    assert model.meta["version"] == model.version
    assert model.meta["trained_on"]["pairs"] > 10_000
    assert {"caught", "precision", "lookalikes_blocked"} <= set(model.meta["out_of_fold"])


def test_a_model_of_other_features_is_refused(tmp_path: Path) -> None:
    z = _stored()
    z["feature_names"] = np.array([*FEATURES[:-1], "something_else"])
    path = tmp_path / "other.npz"
    np.savez(path, **z)
    with pytest.raises(ValueError, match="other features"):
        LearnedModel.load(path)


def _registry_frequencies() -> NameFrequencies:
    people = [
        Person(first, last, D(1950 + i % 60, 1 + i % 12, 1 + i % 28), "F" if i % 2 else "M", "DKR")
        for i, (first, last) in enumerate(
            (f, la) for f in ("Mamadou", "Fatou", "Awa", "Ibrahima", "Aminata", "Moussa") for la in ("Diallo", "Ndiaye", "Ba", "Fall", "Sow")
        )
        for _ in range(8)
    ]
    return NameFrequencies.from_people(people)


ORIGINAL = Person("Aminata", "Sow", D(1987, 4, 23), "F", "THS", "+221775550101")


@pytest.mark.parametrize(
    "duplicate",
    [
        Person("Aminata", "Sow", D(1987, 4, 23), "F", "THS", "+221775550101"),
        Person("Aminatta", "Sow", D(1987, 4, 23), "F", "THS", "+221775550101"),  # a typo
        Person("Sow", "Aminata", D(1987, 4, 23), "F", "THS", "+221775550101"),  # names swapped
        Person("Aminata", "Sow", D(1987, 4, 23), "F", "DKR", "+221775550101"),  # moved
    ],
)
def test_plain_duplicates_are_certain(duplicate: Person) -> None:
    m = LearnedMatcher(frequencies=_registry_frequencies())
    result = m.compare(duplicate, ORIGINAL)
    assert result.band == "certain", result
    assert result.features and all(name in FEATURES for name, _ in result.features)


def test_a_twin_is_not_certain() -> None:
    m = LearnedMatcher(frequencies=_registry_frequencies())
    twin = Person("Awa", "Sow", D(1987, 4, 23), "F", "THS", "+221775550101")
    result = m.compare(twin, ORIGINAL)
    assert result.score < m.thresholds.certain  # the trees' own judgement: twins are not capped
    assert result.hard_conflict == "twin"  # and the hint stays for a reviewer


def test_a_stranger_scores_low() -> None:
    m = LearnedMatcher(frequencies=_registry_frequencies())
    assert m.compare(Person("Moussa", "Fall", D(1962, 9, 2), "M", "DKR"), ORIGINAL).score < 0.1


def test_rank_orders_a_set_and_keeps_the_fs_vocabulary() -> None:
    freq = _registry_frequencies()
    m = LearnedMatcher(frequencies=freq)
    query = Person("Aminata", "Sow", D(1987, 4, 23), "F", "THS")
    cands = [
        ("stranger", Person("Moussa", "Fall", D(1962, 9, 2), "M", "DKR")),
        ("original", ORIGINAL),
        ("sister", Person("Awa", "Sow", D(1990, 1, 5), "F", "THS")),
    ]
    ranked = m.rank(query, cands, limit=3, min_score=0.0)
    assert ranked[0][0] == "original"
    assert [k for k, _ in ranked] == sorted((k for k, _ in ranked), key=lambda k: -dict(ranked)[k].score)
    fs = Matcher(frequencies=freq).compare(query, ORIGINAL)
    assert dict(ranked)["original"].matched_fields == fs.matched_fields
    assert m.rank(query, [], limit=3) == []


def test_the_matcher_setting_picks_the_scorer() -> None:
    from shared.matching import matcher_of
    from shared.settings import Settings, SettingsError

    freq = NameFrequencies()
    assert isinstance(matcher_of(Settings().matcher, freq), LearnedMatcher)
    old = matcher_of(Settings(matcher="fellegi_sunter").matcher, freq)
    assert type(old) is Matcher and old.frequencies is freq
    with pytest.raises(SettingsError, match="matcher"):
        Settings(matcher="magic")


def _child(first: str, dob: dt.date, mother: str | None, sex: str = "F", estimated: bool = True) -> Person:
    return Person(first, "Sow", dob, sex, "THS", "+221775550101", date_of_birth_estimated=estimated, mother_mpi_id=mother)


def test_campaign_pairs_are_scored_by_the_trees() -> None:
    """Estimated dates and linked mothers are features: the trees score those pairs (no Fellegi-Sunter fallback)."""
    m = LearnedMatcher(frequencies=_registry_frequencies())
    born = dt.date.today() - dt.timedelta(days=700)
    first = _child("Awa", born, "MOTHER-1")
    again = _child("Awa", born - dt.timedelta(days=60), "MOTHER-1")  # another estimate at a later campaign
    same = m.compare(again, first)
    assert same.band == "certain", same
    assert any(name in ("same_mother", "mother_links", "dob_estimated", "dob_est_gap", "fs_total") for name, _ in same.features)
    # the same name and about the same age, another woman's child (her own phone): not blocked,
    # and the other mother is what weighs against it
    namesake = replace(_child("Awa", born - dt.timedelta(days=20), "MOTHER-2"), phone_number="+221779990000")
    other = m.compare(namesake, first)
    assert other.score < m.thresholds.certain, other
    assert other.score < m.compare(replace(namesake, mother_mpi_id="MOTHER-1"), first).score


def test_twins_of_one_mother_are_never_certain() -> None:
    m = LearnedMatcher(frequencies=_registry_frequencies())
    born = dt.date.today() - dt.timedelta(days=300)
    twin = m.compare(_child("Adama", born, "MOTHER-1", "M"), _child("Awa", born, "MOTHER-1"))
    assert twin.hard_conflict == "twin_same_mother" and twin.score < m.thresholds.certain
