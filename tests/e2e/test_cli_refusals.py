"""The command line refuses what it cannot do well, and says why, before it touches a backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from domain.events import EVENT_TYPES

NOWHERE = "127.0.0.1:9"  # the discard port: nothing there speaks Kafka or MongoDB


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``caas`` with none of the caller's ``CAAS_*`` settings, servers that do not exist, and ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
    settings = {
        "CAAS_DATA_DIR": str(tmp_path / "data"),
        "CAAS_KAFKA_BOOTSTRAP": NOWHERE,
        "CAAS_MONGO_URL": f"mongodb://{NOWHERE}/?serverSelectionTimeoutMS=500",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env={**clean, **settings},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("backend", ["embedded", "kafka"])
def test_replay_of_unknown_event_types_fails_and_names_the_known_ones(tmp_path: Path, backend: str) -> None:
    done = run(tmp_path, "replay", "--backend", backend, "--types", "MessagePosted,Bogus,messageposted")
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    assert "Bogus" in done.stderr and "messageposted" in done.stderr, done.stderr
    assert all(name in done.stderr for name in EVENT_TYPES), done.stderr
    assert not (tmp_path / "data").exists(), "the backend was touched before the types were checked"


@pytest.mark.parametrize("backend", ["embedded", "kafka"])
@pytest.mark.parametrize("blank", ["", " \t"])
def test_replay_refuses_a_blank_tenant_rather_than_taking_every_tenant(
    tmp_path: Path, backend: str, blank: str
) -> None:
    done = run(tmp_path, "replay", "--backend", backend, "--tenant", blank)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    assert "--tenant takes a tenant id" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "data").exists(), "the backend was touched before the tenant was checked"


@pytest.mark.parametrize("command", [["serve", "--backend", "kafka"], ["worker"]])
@pytest.mark.parametrize(
    "missing",
    [["CAAS_SECRET_KEY", "CAAS_ADMIN_TOKEN"], ["CAAS_SECRET_KEY"], ["CAAS_ADMIN_TOKEN"], ["CAAS_MASTER_KEY"]],
)
def test_a_kafka_node_refuses_to_start_without_the_shared_secrets(
    tmp_path: Path, command: list[str], missing: list[str]
) -> None:
    given = {name: "s3cret-shared-by-every-node" for name in ("CAAS_SECRET_KEY", "CAAS_ADMIN_TOKEN")}
    given["CAAS_MASTER_KEY"] = "Y2Fhcy10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXMhISE="
    done = run(tmp_path, *command, **{k: v for k, v in given.items() if k not in missing})
    assert done.returncode != 0
    assert all(name in done.stderr for name in missing), done.stderr
    assert "every node" in done.stderr, done.stderr  # it says why: a generated secret differs per node
    assert not (tmp_path / "data").exists(), "no per-node secret may be generated"


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_replay_since_a_time_utc_cannot_hold_is_refused_with_the_form_it_takes(tmp_path: Path, since: str) -> None:
    done = run(tmp_path, "replay", "--since", since)
    assert done.returncode != 0
    assert "RFC 3339" in done.stderr and since in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "data").exists(), "the backend was touched before the time was checked"


@pytest.mark.parametrize("backend", ["embedded", "kafka"])
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--types", "MessagePosted,Bogus"], "Bogus"),
        (["--since", "yesterday"], "RFC 3339"),
        (["--until", "2026-13-01"], "log position"),
        (["--since", "-5"], "RFC 3339"),
        (["--since", "100", "--until", "50"], "empty"),
        (["--since", "2026-12-03", "--until", "2026-12-02T23:59:59Z"], "empty"),
        (["--format", "xlsx"], "invalid choice"),
        (["--tenant", ""], "--tenant takes a tenant id"),  # an unset $TENANT is not "every tenant"
        (["--tenant", "  "], "--tenant takes a tenant id"),
    ],
)
def test_export_refuses_bad_input_before_it_reads_the_log(
    tmp_path: Path, backend: str, args: list[str], says: str
) -> None:
    out = tmp_path / "out"
    done = run(tmp_path, "export", "--backend", backend, "--output", str(out), *args)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "data").exists(), "the backend was touched before the input was checked"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing was written"


def test_export_refuses_an_output_directory_that_holds_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    done = run(tmp_path, "export", "--output", str(out))
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "not an empty directory" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "data").exists()


def test_a_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    """A log that cannot be read (here: not a SQLite file) fails the export after it began:
    neither the output nor its staging directory is left."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "events.db").write_bytes(b"this is not a database, " * 100)
    out = tmp_path / "exports" / "out"
    done = run(tmp_path, "export", "--output", str(out))
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "caas export failed" in done.stderr and "nothing was written" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert list((tmp_path / "exports").iterdir()) == [], "no output, no staging directory"
