"""composer search against a real PostgreSQL server: two worker processes share one study (issue 6, item 6).

The fixture starts a throwaway PostgreSQL cluster on loopback (initdb into a temporary directory, pg_ctl on a
free port, unix sockets in the same directory), the test runs two ``python -m composer.cli search ... --storage
postgresql://...`` processes against it, as people on two machines would, and checks the study they share.
initdb and postgres refuse to run as root: as root (CI), the server runs as the ``postgres`` account of the
Debian package (or ``nobody``); the workers stay root and connect over TCP with a password.
Skipped only when the server binaries are absent (``.ci/run`` installs the Debian ``postgresql`` package).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import yaml

import composer
from composer.cli import main
from composer.search import open_storage

from conftest import TINY_SPACE

REPO = Path(__file__).resolve().parents[1]
TRIALS = 8
PASSWORD = "s3cret-pw"

SPACE = TINY_SPACE.replace("name: tiny", "name: pg_tiny")


def _server_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/VERSION/bin (the
    package does not put them on PATH), newest version first."""
    on_path = [shutil.which(name) for name in ("initdb", "pg_ctl")]
    if all(on_path) and len({Path(p).resolve().parent for p in on_path}) == 1:
        return Path(on_path[0]).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in Path(p).parent.name
                                                                            .split(".") if x.isdigit()])
    for folder in reversed(versions):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _server_account() -> dict:
    """subprocess keyword arguments that run the server unprivileged: as root, switch to ``postgres`` (the Debian
    package's account) or ``nobody``; otherwise run as ourselves."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    pytest.fail("running as root, but neither a 'postgres' nor a 'nobody' account exists to run the server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url_base: str       # postgresql://composer:PASSWORD@127.0.0.1:PORT
    root: Path
    log: Path

    def url(self, database: str) -> str:
        return f"{self.url_base}/{database}"


@pytest.fixture(scope="module")
def postgres():
    bindir = _server_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin; "
                    "install the Debian package 'postgresql' (CI's .ci/run does)")
    account = _server_account()
    # /tmp rather than pytest's tmp_path: the server account must be able to reach its directory, and the unix
    # socket path must stay short (about 100 bytes at most)
    root = Path(tempfile.mkdtemp(prefix="composer-pg-", dir="/tmp" if account else None))
    if account:
        os.chown(root, account["user"], account["group"])
    data, log = root / "data", root / "server.log"

    def pg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bindir / args[0]), *args[1:]], cwd=root, capture_output=True, text=True,
                              timeout=120, **account)

    started = False
    try:
        # TCP connections need the password (as on a real server); the unix socket is trusted
        (root / "pwfile").write_text(PASSWORD + "\n")
        done = pg("initdb", "-D", str(data), "-U", "composer", f"--pwfile={root / 'pwfile'}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions")
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        for _ in range(3):   # another process may take the free port between choosing and binding it
            port = _free_port()
            # -F: no fsync (a throwaway cluster); unix sockets in our directory, not /var/run/postgresql
            done = pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                      f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -F", "start")
            if done.returncode == 0:
                started = True
                break
        assert started, f"pg_ctl start failed:\n{done.stderr}\n{log.read_text() if log.exists() else ''}"
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="composer", password=PASSWORD, dbname="postgres")
        conn.autocommit = True   # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE search")
        conn.close()
        yield Server(f"postgresql://composer:{PASSWORD}@127.0.0.1:{port}", root, log)
    finally:
        if started:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_worker_processes_share_a_postgresql_study(postgres, tmp_path):
    space = tmp_path / "pg_tiny.yaml"
    space.write_text(SPACE)
    storage = postgres.url("search")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    workers = []
    for i in range(2):
        # what each machine runs: the same command and storage URL, its own run directory and worker index
        cmd = [sys.executable, "-m", "composer.cli", "search", str(space), "--trials", str(TRIALS),
               "--storage", storage, "--run-dir", str(tmp_path / f"machine{i}"), "--worker-index", str(i),
               "--proxy-size", "32", "--proxy-batch", "8", "--heartbeat", "1", "--no-progress"]
        workers.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in workers:
            out, err = proc.communicate(timeout=150)
            assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{out}\n{err}"
            outputs.append(out)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for out in outputs:   # each names the study and storage it joined (either may have created it), no password
        assert "study 'pg_tiny-proxy'" in out and f"storage {storage.replace(PASSWORD, '***')};" in out
        assert "0 over-budget models built" in out and PASSWORD not in out

    # the plain postgresql:// URL works although SQLAlchemy 2.1 would read it as psycopg 3 (see database_url)
    study = optuna.load_study(study_name="pg_tiny-proxy", storage=open_storage(storage, 1))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), f"duplicate trial numbers: {sorted(numbers)}"
    assert sorted(numbers) == list(range(len(numbers)))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert TRIALS <= len(complete) <= TRIALS + 1   # a race on the last trial may add one per extra worker
    assert not any(t.state.name == "RUNNING" for t in trials)
    workers_seen = {t.user_attrs["worker"] for t in complete}
    assert len(workers_seen) == 2, f"one worker did every trial: {workers_seen}"
    assert study.user_attrs["settings"]["budget_macs"] == 10_000_000
    for t in complete:
        assert (t.user_attrs["macs"] <= 10_000_000) == t.user_attrs["feasible"]

    # each machine's run directory gets the study's best spec as a plain spec that composer accepts unchanged
    # (a machine reports when the study holds TRIALS finished trials; a racing extra trial may finish later)
    by_number = {t.number: t for t in complete}
    for i in range(2):
        path = tmp_path / f"machine{i}" / "best.yaml"
        text = path.read_text()
        best = by_number[int(re.search(r"\(trial (\d+):", text).group(1))]
        assert best.user_attrs["feasible"]
        better = [t for t in complete if t.user_attrs["feasible"] and t.value > best.value]
        assert len(better) <= len(complete) - TRIALS
        assert yaml.safe_load(text)["layout"] == best.user_attrs["spec"]["layout"]
        assert composer.estimate(str(path)).macs == best.user_attrs["macs"] <= 10_000_000
        assert main(["validate", str(path)]) == 0
        assert (tmp_path / f"machine{i}" / "trials.csv").is_file()
    assert not (tmp_path / "machine0" / "study.db").exists()   # the study lives in PostgreSQL only
