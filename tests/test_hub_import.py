"""``mpi-hub import`` (seeding the hub in bulk) and the ``--map`` of both imports, as real processes."""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from cluster import ENV, ROOT, Hub, Node, cli, free_port, sync_now

HEADER = "first_name,last_name,date_of_birth,gender,region_code,country_code,phone_number,external_ids.dhis2_uid"


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _map(path: Path) -> dict[int, tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["line", "mpi_id", "status"]
    lines = [int(r[0]) for r in rows[1:]]
    assert len(lines) == len(set(lines)), "a line is mapped twice"
    return {int(r[0]): (r[1], r[2]) for r in rows[1:]}


def test_hub_import_seeds_identities_that_search_and_sync_find(pg_database: str, tmp_path: Path) -> None:
    hub = Hub(pg_database)
    url = pg_database
    csv_file = tmp_path / "census.csv"
    csv_file.write_text("\n".join([
        HEADER,
        "Aminata,Diallo,1995-03-15,F,DKR,SN,+221771234567,abcDEF123gh",   # 2: created
        "Aminata,Diallo,1995-03-15,F,DKR,SN,+221771234567,",              # 3: the same woman, no UID: created, dedup's work
        "Aminata,Dialo,1995-03-15,F,DKR,SN,,abcDEF123gh",                 # 4: her UID again: blocked against line 2
        "Moussa,Traore,1980-01-02,M,THI,SN,,",                            # 5: created, in Thies
        "Fatou,Sow,2999-01-01,F,DKR,SN,,",                                # 6: invalid (born in the future)
        "Ibrahima,Ndiaye,1990-07-01,M,ZIG,SN,,,extra",                    # 7: invalid (a value too many)
        '"Mame Diarra","Ba",1988-11-30,F,DKR,SN,,',                       # 8: created
    ]) + "\n")
    map_file = tmp_path / "census.map.csv"
    done = cli("hub", "import", "--database-url", url, str(csv_file), "--map", str(map_file), check=False)
    assert done.returncode == 1, done.stderr  # invalid rows: reported, skipped, and the exit says so
    assert "4 created" in done.stdout and "1 blocked" in done.stdout and "2 invalid" in done.stdout, done.stdout
    assert f"{csv_file}:6: date_of_birth" in done.stderr and f"{csv_file}:7: more values" in done.stderr
    mapped = _map(map_file)
    assert sorted(mapped) == [2, 3, 4, 5, 6, 7, 8]
    assert [mapped[n][1] for n in range(2, 9)] == ["created", "created", "blocked", "created", "invalid", "invalid",
                                                   "created"]
    aminata, twin, moussa, mame = mapped[2][0], mapped[3][0], mapped[5][0], mapped[8][0]
    assert mapped[4][0] == aminata and mapped[6][0] == mapped[7][0] == ""
    assert len({aminata, twin, moussa, mame}) == 4 and moussa.startswith("SN-THI-") and aminata.startswith("SN-DKR-")
    report = (tmp_path / "census.csv.report.csv").read_text().splitlines()
    assert any(line.startswith(f"4,blocked,,{aminata},") for line in report), report

    jsonl = tmp_path / "campaign.jsonl"
    jsonl.write_text("\n".join([
        json.dumps({"first_name": "Khady", "last_name": "Fall", "date_of_birth": "2001-05-06", "gender": "F",
                    "region_code": "DKR", "country_code": "SN", "external_ids": {"dhis2_uid": "xyzDEF123gh"}}),
        "",  # a blank line is no row
        "{not json",
        json.dumps({"first_name": "Awa", "last_name": "Ndiaye", "region_code": "DKR", "country_code": "SN",
                    "external_ids": {"dhis2_uid": "abcDEF123gh"}}),  # UID of the census's line 2: blocked
        json.dumps({"first_name": "Khady", "last_name": "Fall", "date_of_birth": "2001-05-06", "gender": "F",
                    "region_code": "DKR", "country_code": "SN"}),  # the first row again, no UID: created
    ]) + "\n")
    jmap = tmp_path / "campaign.map.csv"
    done = cli("hub", "import", "--database-url", url, str(jsonl), "--map", str(jmap), check=False)
    assert done.returncode == 1 and "2 created" in done.stdout and "1 blocked" in done.stdout, done.stdout
    jmapped = _map(jmap)
    assert {n: s for n, (_, s) in jmapped.items()} == {1: "created", 3: "invalid", 4: "blocked", 5: "created"}
    assert jmapped[4][0] == aminata
    khady = jmapped[1][0]

    # Complete hub identities: index, keys, external ids, changes, feed rows, the dedup queue.
    created = [aminata, twin, moussa, mame, khady, jmapped[5][0]]
    assert hub.sql("SELECT count(*) FROM identity") == [(6,)]
    assert hub.sql("SELECT count(DISTINCT identity_pk) FROM blocking_key") == [(6,)]
    assert hub.sql("SELECT count(DISTINCT identity_pk) FROM name_token") == [(6,)]
    assert hub.sql("SELECT count(*) FROM dedup_pending") == [(6,)]
    assert sorted(m for (m,) in hub.sql("SELECT mpi_id FROM change_log WHERE kind = 'identity.create'")) == sorted(created)
    assert sorted(hub.sql("SELECT mpi_id, region_a FROM sync_feed WHERE kind = 'identity.create'")) == sorted(
        [(m, "THI" if m == moussa else "DKR") for m in created])
    assert hub.sql("SELECT i.mpi_id FROM external_id x JOIN identity i ON i.pk = x.identity_pk "
                   "WHERE x.value = 'abcDEF123gh'") == [(aminata,)]

    hub.start()
    try:
        status, body = hub.call("GET", f"/mpi/{mame}")
        assert status == 200 and body["first_name"] == "Mame Diarra" and body["last_name"] == "Ba", body
        status, found = hub.call("GET", "/mpi/search?q=diallo+aminata")
        assert status == 200 and {i["mpi_id"] for i in found["items"]} == {aminata, twin}, found
        # A node of Dakar receives the region's imported identities, not Thies's.
        node = Node(tmp_path / "dkr", hub.enroll("dkr", "DKR", tmp_path / "dkr.json", hub.url))
        node.start()
        try:
            sync_now(node)
            held = {m for (m,) in node.sql("SELECT mpi_id FROM identity")}
            assert held == set(created) - {moussa}, held
            status, body = node.call("GET", f"/mpi/{khady}")
            assert status == 200 and body["external_ids"] == {"dhis2_uid": "xyzDEF123gh"}, body
        finally:
            node.stop()
        # The list's own duplicates are the dedup's: one pass merges the two Khadys (and the Aminatas).
        status, ran = hub.call("POST", "/dedup/run")
        assert status == 200 and ran["checked"] == 6 and ran["merged"] + ran["queued"] >= 2, ran
        merged = dict(hub.sql("SELECT mpi_id, merged_into FROM identity WHERE merged_into IS NOT NULL"))
        reviews = [json.loads(m) for (m,) in hub.sql("SELECT mpi_ids FROM review_item WHERE status = 'open'")]
        for pair in ({aminata, twin}, {khady, jmapped[5][0]}):
            a, b = sorted(pair)
            assert merged.get(a) == b or merged.get(b) == a or pair in [set(r) for r in reviews], (pair, merged, reviews)
        assert hub.sql("SELECT count(*) FROM dedup_pending") == [(0,)]
    finally:
        hub.stop()


def _people(n: int) -> str:
    first = ["Awa", "Fatou", "Aminata", "Mariama", "Khady", "Moussa", "Ibrahima", "Ousmane", "Cheikh", "Abdou"]
    last = ["Ndiaye", "Diop", "Fall", "Sow", "Ba", "Gueye", "Faye", "Sarr", "Diouf", "Cisse"]
    rows = [HEADER]
    for i in range(n):
        dob = "bad-date" if i % 97 == 5 else f"19{50 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        uid = f"u{i:010d}" if i % 3 else ""
        rows.append(f"{first[i % 10]}{i},{last[(i * 7) % 10]},{dob},{'FM'[i % 2]},DKR,SN,,{uid}")
    return "\n".join(rows) + "\n"


def test_a_killed_hub_import_resumes_without_creating_anyone_twice(pg_database: str, tmp_path: Path) -> None:
    hub = Hub(pg_database)
    n = 6000
    big = tmp_path / "big.csv"
    big.write_text(_people(n))
    invalid = sum(1 for i in range(n) if i % 97 == 5)
    args = [sys.executable, "-m", "hub", "import", "--database-url", pg_database, str(big), "--batch", "100"]
    proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done_at_kill = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with psycopg.connect(pg_database) as conn:
                row = conn.execute("SELECT last_line FROM import_progress").fetchone()
            if row and row[0] > 1000:
                proc.send_signal(signal.SIGKILL)
                done_at_kill = int(row[0])
                break
            time.sleep(0.05)
    finally:
        proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()
    assert done_at_kill and proc.returncode == -signal.SIGKILL, "the import ended before it could be killed"
    partial = hub.sql("SELECT count(*) FROM identity")[0][0]
    assert 0 < partial < n - invalid

    map_file = tmp_path / "big.map.csv"
    again = cli("hub", "import", "--database-url", pg_database, str(big), "--map", str(map_file), "--batch", "5000",
                check=False)
    assert again.returncode == 1 and "already imported" in again.stdout, again.stdout
    mapped = _map(map_file)
    assert sorted(mapped) == list(range(2, n + 2))  # every data line once, whichever run did it
    statuses = [s for _, s in mapped.values()]
    assert statuses.count("invalid") == invalid and statuses.count("created") == n - invalid
    ids = [m for m, s in mapped.values() if s == "created"]
    assert len(set(ids)) == len(ids)
    assert hub.sql("SELECT count(*), count(DISTINCT mpi_id) FROM identity") == [(len(ids), len(ids))]
    assert hub.sql("SELECT count(*) FROM change_log WHERE kind = 'identity.create'") == [(len(ids),)]
    assert hub.sql("SELECT count(*) FROM sync_feed") == [(len(ids),)]
    # The same file once more: nothing new, and the map is the same.
    third = cli("hub", "import", "--database-url", pg_database, str(big), "--map", str(tmp_path / "m2.csv"))
    assert f"{n} already imported" in third.stdout and "0 created" in third.stdout
    assert _map(tmp_path / "m2.csv") == mapped


def test_hub_import_fails_in_one_line(pg_database: str, tmp_path: Path) -> None:
    hub = Hub(pg_database)
    good = tmp_path / "ok.csv"
    good.write_text(HEADER + "\nAwa,Diop,1990-01-01,F,DKR,SN,,\n")
    assert "no such file" in _one_line(cli("hub", "import", "--database-url", pg_database, str(tmp_path / "none.csv"),
                                           check=False))
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("name,born\nAwa,1990\n")
    assert "unknown column" in _one_line(cli("hub", "import", "--database-url", pg_database, str(bad_header),
                                             check=False))
    huge = tmp_path / "huge.csv"
    huge.write_text(HEADER + "\nAwa," + "x" * 200_000 + ",1990-01-01,F,DKR,SN,,\n")
    assert "not a readable CSV" in _one_line(cli("hub", "import", "--database-url", pg_database, str(huge),
                                                 check=False))
    assert "--batch" in _one_line(cli("hub", "import", "--database-url", pg_database, str(good), "--batch", "0",
                                      check=False))
    assert _one_line(cli("hub", "import", "--database-url", pg_database, str(good), "--bogus", check=False))
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    assert "error" in _one_line(cli("hub", "import", "--database-url", down, str(good), check=False))
    assert "PostgreSQL" in _one_line(cli("hub", "import", "--database-url", "mysql://x", str(good), check=False))
    assert hub.sql("SELECT count(*) FROM identity") == [(0,)]


def test_node_import_writes_the_map_of_every_line(tmp_path: Path) -> None:
    data = tmp_path / "n"
    cli("node", "init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("\n".join([
        HEADER,
        "Aminata,Diallo,1995-03-15,F,DKR,SN,+221771234567,abcDEF123gh",  # 2: created
        "Moussa,Traore,1980-01-02,M,THI,SN,,",                           # 3: created
        "Aminata,Diallo,1995-03-15,F,DKR,SN,+221771234567,",             # 4: blocked (certain match of 2)
        "Fatou,Sow,2999-01-01,F,DKR,SN,,",                               # 5: invalid
        "Moussa,Traore,,M,THI,SN,,",                                     # 6: probable match of 3 (no birth date): queued
    ]) + "\n")
    map_file = tmp_path / "list.map.csv"
    done = cli("node", "import", "--data-dir", str(data), str(csv_file), "--map", str(map_file), check=False)
    assert done.returncode == 1, done.stderr
    mapped = _map(map_file)
    assert {n: s for n, (_, s) in mapped.items()} == {2: "created", 3: "created", 4: "blocked", 5: "invalid",
                                                      6: "queued"}, mapped
    assert mapped[4][0] == mapped[2][0] and mapped[5][0] == ""
    assert mapped[6][0] not in ("", mapped[3][0])
    with sqlite3.connect(data / "mpi.sqlite3") as db:
        registered = {m for (m,) in db.execute("SELECT mpi_id FROM identity")}
    assert registered == {mapped[n][0] for n in (2, 3, 6)}
    again = cli("node", "import", "--data-dir", str(data), str(csv_file), "--map", str(tmp_path / "again.csv"))
    assert "5 already imported" in again.stdout and _map(tmp_path / "again.csv") == mapped
