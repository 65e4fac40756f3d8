"""``iain user add`` (password from stdin), ``iain user demo``, ``iain db upgrade``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from share.accounts import Accounts
from share.config import ShareSettings
from share.db import open_database
from share.demo import DEMO_ACCOUNTS, assign_demo_slides, create_demo_accounts
from viewer.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARE_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("SHARE_ARGON2_MEMORY_KIB", "1024")


def test_user_add_reads_password_from_stdin(tmp_path: Path, settings: ShareSettings) -> None:
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "viewer.cli",
            "user",
            "add",
            "dr-house",
            "--centre",
            "rouen",
            "--role",
            "pathologist",
            "--db",
            db_url,
        ],
        input="correct horse battery\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "user dr-house added (pathologist, rouen)" in proc.stdout
    db = open_database(db_url)
    acc = Accounts(db, settings)
    assert acc.authenticate("dr-house", "correct horse battery", "ip").centre == "rouen"
    db.dispose()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--centre", "paris", "--role", "ml"], "longenough\n", "centre 'paris' not in"),
        (["--centre", "caen", "--role", "ml"], "short\n", "password shorter than 8"),
    ],
)
def test_user_add_errors_are_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    stdin: str,
    message: str,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["user", "add", "someone", *args, "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_user_add_twice_is_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for expected in (0, 1):
        monkeypatch.setattr(sys, "stdin", io.StringIO("longenough\n"))
        assert (
            main(
                [
                    "user",
                    "add",
                    "bob",
                    "--centre",
                    "caen",
                    "--role",
                    "admin",
                    "--data",
                    str(tmp_path),
                ]
            )
            == expected
        )
    assert "user 'bob' already exists" in capsys.readouterr().err


def test_demo_accounts_print_and_log_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: ShareSettings
) -> None:
    assert main(["user", "demo", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(a.username in out and a.password in out for a in DEMO_ACCOUNTS)
    db = open_database(f"sqlite:///{tmp_path / 'iain.db'}")
    acc = Accounts(db, settings)
    assert create_demo_accounts(acc) == list(DEMO_ACCOUNTS)  # idempotent
    for a in DEMO_ACCOUNTS:
        assert acc.authenticate(a.username, a.password, "ip").role.value == a.role
    acc.register_slides([("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")])
    assert assign_demo_slides(acc, ["d", "c", "b", "a"]) == {
        "a": "caen",
        "b": "rouen",
        "c": "lille",
        "d": "caen",
    }
    assert acc.slide("c") is not None and acc.slide("c").centre == "lille"  # type: ignore[union-attr]
    db.dispose()


def test_iain_demo_spreads_slides_and_prints_logins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.viewer.pyramids import synthetic_rgb, write_pyramid
    from viewer.__main__ import _demo_accounts

    for i, name in enumerate(("a", "b", "c")):
        write_pyramid(tmp_path / f"{name}.zarr", synthetic_rgb(64, 64, seed=i), tile=64)
    _demo_accounts(tmp_path)
    out = capsys.readouterr().out
    assert "caen-patho" in out and "demo-lille-patho" in out
    db = open_database(f"sqlite:///{tmp_path / 'iain.db'}")
    acc = Accounts(db, ShareSettings(data_dir=tmp_path))
    assert sorted(ref.centre for ref, _ in acc.slides()) == ["caen", "lille", "rouen"]
    db.dispose()


def test_audit_export_and_db_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert main(["db", "upgrade", "--db", url]) == 0
    assert "schema up to date (sqlite)" in capsys.readouterr().out
    db = open_database(url)
    with db.session() as s:
        from share import audit

        audit.append(s, actor="x", action="slide.view", centre_id="caen", slide_id="s1")
        audit.append(s, actor="y", action="slide.view", centre_id="lille", slide_id="s2")
    db.dispose()
    assert main(["audit", "export", "--centre", "caen", "--format", "csv", "--db", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("seq,at,actor,action") and len(lines) == 2 and ",x," in lines[1]
    assert main(["audit", "export", "--centre", "lille", "--db", url]) == 0
    assert [r["actor"] for r in json.loads(capsys.readouterr().out)] == ["y"]
