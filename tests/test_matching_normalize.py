"""Normalisation of West African names as clerks write them."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.matching.normalize import compact, name_tokens, normalize_name, squeeze_doubles


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("N'Diaye ", "NDIAYE"),
        ("NDIAYE", "NDIAYE"),
        ("ndiaye", "NDIAYE"),
        ("N’Diaye", "NDIAYE"),  # typographic apostrophe
        ("M'Baye", "MBAYE"),
        ("Sène", "SENE"),
        ("Keïta", "KEITA"),
        ("Aïssatou", "AISSATOU"),
        ("Ndèye Fatou", "NDEYE FATOU"),
        ("mame  diarra", "MAME DIARRA"),
        ("  Mame-Diarra ", "MAME DIARRA"),
        ("El Hadji", "EL HADJI"),
        ("Cissé", "CISSE"),
        ("", ""),
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


def test_name_tokens_split_compound_names_and_glue_apostrophes() -> None:
    assert name_tokens("Mame Diarra") == ["MAME", "DIARRA"]
    assert name_tokens("N'Diaye") == ["NDIAYE"]
    assert name_tokens("El  Hadji Malick") == ["EL", "HADJI", "MALICK"]
    assert name_tokens("   ") == []


def test_compact_ignores_where_the_spaces_go() -> None:
    assert compact("Ndèye Fatou") == compact("Ndeyefatou") == "NDEYEFATOU"
    assert compact("N Diaye") == compact("N'Diaye")


def test_doubled_letters_squeeze() -> None:
    assert squeeze_doubles("DIALLO") == squeeze_doubles("DIALO") == "DIALO"
    assert squeeze_doubles("OUATTARA") == "OUATARA"


@given(st.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_normalisation_is_idempotent_and_ascii(raw: str) -> None:
    once = normalize_name(raw)
    assert normalize_name(once) == once
    assert all(ch == " " or "A" <= ch <= "Z" for ch in once)
    assert "  " not in once and once == once.strip()
