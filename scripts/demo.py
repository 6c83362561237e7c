"""The sync demo: a hub on the local PostgreSQL, two nodes, people registered offline at each.

    scripts/demo                 (installs, then runs this)
    MPI_DEMO_KEEP=1 scripts/demo keep the database and the data folders afterwards

Steps: init and serve a hub; enrol node Dakar (region DKR, also receiving THI) and node
Thies (THI, also receiving DKR); stop the hub; register people and issue cards at both
nodes while the hub is away (a sync attempt fails and says so); start the hub again; sync
both nodes; show that both hold the same identities and that each verifies the other's cards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MPI_LOG_LEVEL": "WARNING", "MPI_SYNC_INTERVAL_SECONDS": "3600"}
PG = os.environ.get("MPI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(module: str, *args: str, check: bool = True) -> str:
    print(f"$ mpi-{module} {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT, env=ENV)
    out = (done.stdout + done.stderr).strip()
    if out and "token" not in args:
        print("  " + out.replace("\n", "\n  "))
    if check and done.returncode:
        raise SystemExit(f"demo failed at: {module} {' '.join(args)}")
    return done.stdout.strip()


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(module: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    p = port()
    proc = subprocess.Popen([sys.executable, "-m", module, "serve", *args, "--port", str(p)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{p}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/health", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{module} did not start")


def call(url: str, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, data, headers, method=method), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="mpi-demo-"))
    # The hub's signing key is sealed with a key file kept outside its database: the demo's own.
    ENV.setdefault("MPI_HUB_KEY_FILE", str(work / "hub.key"))
    db = f"mpi_demo_{uuid.uuid4().hex[:8]}"
    url = PG.rsplit("/", 1)[0] + "/" + db
    procs: list[subprocess.Popen[bytes]] = []
    try:
        step("a hub on PostgreSQL")
        run("hub", "init", "--database-url", url, "--country", "SN")
        hub, hub_url = serve("hub", "--database-url", url)
        hub_port = hub_url.rsplit(":", 1)[1]
        print(f"  hub at {hub_url}")

        step("two nodes, enrolled with the hub")
        nodes: dict[str, dict[str, Any]] = {}
        for name, region, other in (("dakar", "DKR", "THI"), ("thies", "THI", "DKR")):
            enrolment = work / f"{name}.json"
            run("hub", "node", "enroll", "--database-url", url, "--name", name, "--region", region,
                "--hub-url", hub_url, "--out", str(enrolment), "--subscribe", other)
            data = work / name
            run("node", "init", "--data-dir", str(data), "--enroll", str(enrolment))
            token = run("node", "token", "create", "--data-dir", str(data), "--role", "supervisor", "--name", "demo")
            proc, node_url = serve("node", "--data-dir", str(data))
            procs.append(proc)
            nodes[name] = {"url": node_url, "token": token, "region": region, "data": data, "cards": []}
            print(f"  {name} at {node_url}")

        step("the hub goes away: the posts keep working offline")
        hub.send_signal(signal.SIGTERM)
        hub.wait(30)
        people = {
            "dakar": [("Aminata", "Diallo", "1995-03-15", "F"), ("Moussa", "Ndiaye", "1988-11-02", "M")],
            "thies": [("Fatou", "Sow", "2001-07-21", "F"), ("Ibrahima", "Fall", "1979-01-09", "M")],
        }
        for name, node in nodes.items():
            for first, last, dob, sex in people[name]:
                status, answer = call(node["url"], "POST", "/mpi/register", node["token"], {
                    "first_name": first, "last_name": last, "date_of_birth": dob, "gender": sex,
                    "region_code": node["region"], "country_code": "SN"})
                mpi_id = answer["mpi_id"]
                status, card = call(node["url"], "POST", f"/mpi/{mpi_id}/card", node["token"],
                                    {"campaign_id": "demo", "programme_type": "vaccination"})
                node["cards"].append((first, card["qr_token"]))
                print(f"  {name}: registered {first} {last} as {mpi_id}, card {card['card_code']}")
        status, answer = call(nodes["dakar"]["url"], "POST", "/sync/now", nodes["dakar"]["token"])
        print(f"  dakar tries to sync: {status} {answer['status']}: {answer['error']}")

        step("the hub is back: each node syncs (push then pull)")
        hub = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--database-url", url, "--port", hub_port],
                               cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{hub_port}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        for name in ("dakar", "thies", "dakar"):
            status, answer = call(nodes[name]["url"], "POST", "/sync/now", nodes[name]["token"])
            print(f"  {name}: pushed {answer['pushed']}, pulled {answer['pulled']}, {answer['requests']} request(s)")

        step("every node holds the same identities")
        views = {}
        for name, node in nodes.items():
            status, found = call(node["url"], "GET", "/mpi/search?limit=50", node["token"])
            views[name] = sorted((i["mpi_id"], i["first_name"], i["last_name"], i["region_code"]) for i in found["items"])
            for row in views[name]:
                print(f"  {name}: {' '.join(row)}")
        same = views["dakar"] == views["thies"] and len(views["dakar"]) == 4
        print(f"  the same at both nodes: {'yes' if same else 'NO'}")

        step("each node verifies the other's cards (GET /mpi/verify/{token}, no login)")
        ok = same
        for name, other in (("dakar", "thies"), ("thies", "dakar")):
            for first, token in nodes[other]["cards"]:
                status, answer = call(nodes[name]["url"], "GET", f"/mpi/verify/{token}")
                ok = ok and answer.get("status") == "valid"
                print(f"  at {name}, the card of {first} from {other}: {answer.get('status')}")
        status, state = call(nodes["dakar"]["url"], "GET", "/sync/status", nodes["dakar"]["token"])
        print(f"  dakar /sync/status: pending {state['pending_changes']}, cursors {state['cursors']}, "
              f"last success {state['last_success']}")
        procs.append(hub)
        print("\n" + ("demo OK" if ok else "demo FAILED"))
        return 0 if ok else 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        if not os.environ.get("MPI_DEMO_KEEP"):
            import psycopg

            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            print(f"kept: database {db}, folder {work}")


if __name__ == "__main__":
    raise SystemExit(main())
