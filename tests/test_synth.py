"""The synthetic population generator: seeded, streaming, realistic shares, labelled truth."""

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from synth import generate, to_person  # noqa: E402


def test_same_seed_same_population() -> None:
    assert list(generate(300, seed=5)) == list(generate(300, seed=5))
    assert list(generate(300, seed=5)) != list(generate(300, seed=6))


def test_streams_without_materialising() -> None:
    first = list(itertools.islice(generate(10_000_000, seed=1), 5))
    assert len(first) == 5


def test_kinds_and_truth_links() -> None:
    records = list(generate(4000, seed=3, dup_rate=0.2, lookalike_rate=0.1))
    assert len(records) == 4000
    by_id = {r["record_id"]: r for r in records}
    kinds = Counter(r["kind"] for r in records)
    assert set(kinds) == {"original", "duplicate", "twin", "namesake", "parent_child"}
    assert 0.12 < kinds["duplicate"] / len(records) < 0.22
    for r in records:
        if r["kind"] == "original":
            assert r["related_record_id"] is None
            continue
        orig = by_id[r["related_record_id"]]
        assert orig["kind"] == "original"
        if r["kind"] == "duplicate":
            assert r["person_id"] == orig["person_id"] and r["errors"]
        else:
            assert r["person_id"] != orig["person_id"]
        if r["kind"] == "twin":
            assert r["date_of_birth"] == orig["date_of_birth"] and r["last_name"] == orig["last_name"]
            assert r["first_name"] != orig["first_name"]
        if r["kind"] == "parent_child":
            gap = abs(int(r["date_of_birth"][:4]) - int(orig["date_of_birth"][:4]))
            assert gap >= 15


def test_names_are_skewed_like_the_real_registry() -> None:
    records = [r for r in generate(5000, seed=9) if r["kind"] == "original"]
    last = Counter(r["last_name"] for r in records)
    first = Counter(r["first_name"] for r in records)
    top_last = {n for n, _ in last.most_common(6)}
    assert {"Diallo", "Ndiaye", "Diop"} & top_last
    assert first["Mamadou"] > 0.02 * len(records) and first["Fatou"] > 0.02 * len(records)
    regions = {r["region_code"] for r in records}
    assert {"DKR", "THI", "ZIG", "KDG"} <= regions
    missing_dob = sum(r["date_of_birth"] is None for r in records) / len(records)
    placeholder = sum(
        bool(r["date_of_birth"]) and r["date_of_birth"][5:] in ("01-01", "07-01") for r in records
    )
    assert 0.01 < missing_dob < 0.1 and placeholder / len(records) > 0.05
    phones = [r["phone_number"] for r in records if r["phone_number"]]
    assert all(p.startswith("+2217") and len(p) == 13 for p in phones)


def test_to_person() -> None:
    rec = next(r for r in generate(50, seed=2) if r["date_of_birth"])
    p = to_person(rec)
    assert p.first_name == rec["first_name"] and p.date_of_birth is not None


def test_cli_writes_csv_and_jsonl(tmp_path: Path) -> None:
    for name in ("pop.csv", "pop.jsonl"):
        out = tmp_path / name
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "synth.py"),
                "--n",
                "50",
                "--seed",
                "1",
                "--out",
                str(out),
            ],
            check=True,
            cwd=ROOT,
        )
        lines = out.read_text(encoding="utf-8").splitlines()
        if name.endswith(".csv"):
            assert lines[0].startswith("record_id,person_id,kind") and len(lines) == 51
        else:
            assert len(lines) == 50 and json.loads(lines[0])["kind"] == "original"
