"""The hub's signing key is sealed in its database; the sealing key lives outside it."""

from __future__ import annotations

from pathlib import Path

import psycopg
from cluster import cli

from shared.crypto import open_signing_key, sealing_key


def _one_line(result: object) -> str:
    assert result.returncode != 0, result.stdout  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr  # type: ignore[attr-defined]
    return str(lines[0])


def _meta(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT key, value FROM node_meta").fetchall())


def test_the_hub_key_is_sealed_resealed_and_migrated_from_clear(pg_database: str, tmp_path: Path) -> None:
    db = pg_database
    seal = tmp_path / "keys" / "hub.key"
    env = {"MPI_HUB_KEY_FILE": str(seal)}
    done = cli("hub", "init", "--database-url", db, "--country", "SN", env=env)
    assert str(seal) in done.stdout and seal.stat().st_mode & 0o777 == 0o600
    meta = _meta(db)
    assert "signing_key" not in meta and "signing_key_sealed" in meta
    key = open_signing_key(meta, sealing_key("", str(seal))[0])
    assert bytes(key).hex() not in str(meta)  # the database alone cannot sign as the hub
    assert cli("hub", "node", "list", "--database-url", db, env=env).returncode == 0
    other = tmp_path / "other.key"
    other.write_text("00" * 32)
    other.chmod(0o600)
    assert "does not open" in _one_line(cli("hub", "node", "list", "--database-url", db,
                                            env={"MPI_HUB_KEY_FILE": str(other)}, check=False))
    assert "does not open" in _one_line(cli("hub", "serve", "--database-url", db,
                                            env={"MPI_HUB_KEY_FILE": str(other)}, check=False))
    # Rotation: a new sealing-key file; the old one no longer opens the key.
    new = tmp_path / "new.key"
    done = cli("hub", "key", "reseal", "--database-url", db, "--new-key-file", str(new), env=env)
    assert str(new) in done.stdout and new.stat().st_mode & 0o777 == 0o600
    assert "does not open" in _one_line(cli("hub", "node", "list", "--database-url", db, env=env, check=False))
    assert cli("hub", "node", "list", "--database-url", db, env={"MPI_HUB_KEY_FILE": str(new)}).returncode == 0
    # ... and to a secret from the environment.
    secret = "s" * 16 + "e" * 16 + "cret"
    cli("hub", "key", "reseal", "--database-url", db,
        env={"MPI_HUB_KEY_FILE": str(new), "MPI_HUB_KEY_NEW_SECRET": secret})
    assert cli("hub", "node", "list", "--database-url", db, env={"MPI_HUB_KEY_SECRET": secret}).returncode == 0
    assert "at least 32" in _one_line(cli("hub", "node", "list", "--database-url", db,
                                          env={"MPI_HUB_KEY_SECRET": "short"}, check=False))
    # An older hub kept its key in clear: it is refused until resealed, and keeps its identity.
    with psycopg.connect(db) as conn:
        conn.execute("DELETE FROM node_meta WHERE key = 'signing_key_sealed'")
        conn.execute("INSERT INTO node_meta (key, value) VALUES ('signing_key', %s)", (bytes(key).hex(),))
    assert "mpi-hub key reseal" in _one_line(cli("hub", "node", "list", "--database-url", db, env=env, check=False))
    cli("hub", "key", "reseal", "--database-url", db, env=env)
    meta = _meta(db)
    assert "signing_key" not in meta
    assert open_signing_key(meta, sealing_key("", str(seal))[0]).verify_key == key.verify_key
