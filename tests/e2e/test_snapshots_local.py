"""Snapshot journeys through the real `helpline` command and the real restic, on a local repository.

A snapshot taken with `helpline snapshot now`, listed and described; a deleted
file restored byte-identical with `helpline restore`; an overwrite asked for
first in a real terminal; `helpline agent run --once` doing the scheduled work;
`helpline agent run` stopped with SIGTERM mid-backup leaving no lock behind,
the next run succeeding; a wrong password and a missing repository each said
in one clear line.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from protocol.errors import ExitStatus
from tests.support.live import PC, helpline_bin

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def restic_locks(pc: PC) -> list[str]:
    repo = pc.agent_dir / "snapshots" / "repository"
    password = pc.agent_dir / "snapshots" / "keys" / "repository.password"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    done = subprocess.run(["restic", "--repo", str(repo), "--password-file", str(password), "list", "locks",
                           "--no-lock"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.strip()]


def configure(pc: PC, home: Path, **extra: str) -> dict[str, str]:
    """Point the PC's snapshot policy at ``home`` (local repository only) and return the env that does it."""
    config = pc.agent_dir.parent / "agent.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[snapshots]", f'paths = ["{home}"]', "server = false", "free_space_margin = 0",
             *(f"{key} = {value}" for key, value in extra.items())]
    config.write_text("\n".join(lines) + "\n")
    return {"HELPLINE_AGENT_CONFIG": str(config), "HOME": str(home)}


@pytest.fixture
def home(tmp_path) -> Path:
    rng = random.Random(20261202)
    root = tmp_path / "home" / "ann"
    (root / "Documents").mkdir(parents=True)
    (root / "Documents" / "report.odt").write_bytes(rng.randbytes(64_000))
    (root / "Documents" / "notes.txt").write_text("remember the milk\n" * 40)
    return root


def test_snapshot_now_list_status_and_a_deleted_file_restored_byte_identical(make_pc, home):
    pc = make_pc("pc")
    env = configure(pc, home)
    missing = pc.run("snapshot", "list", env=env)
    assert missing.code == ExitStatus.NOT_FOUND
    error_lines = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "no restic repository" in error_lines[0]
    assert "Traceback" not in missing.stderr

    assert "Not protected" in pc.ok("snapshot", "status", env=env).stdout
    taken = pc.ok("snapshot", "now", env=env)
    assert "Snapshot" in taken.stdout and "local repository" in taken.stdout and "2 new" in taken.stdout
    [listed] = pc.ok("snapshot", "list", "--json", env=env).json()
    assert listed["paths"] == [str(home)]
    table = pc.ok("snapshot", "list", env=env).stdout
    assert listed["short_id"] in table and time.strftime("%Z") in table  # the time names its zone
    status = pc.ok("snapshot", "status", "--json", env=env).json()
    assert status["state"] == "unverified" and status["words"].startswith("Protected: last snapshot just now")

    report = home / "Documents" / "report.odt"
    original = digest(report)
    report.unlink()
    restored = pc.ok("restore", str(report), "--json", env=env).json()
    placed = Path(restored["placed_at"])
    assert placed.parent == report.parent and placed.name.startswith("report.odt.restored-")
    assert digest(placed) == original and not report.exists()
    assert placed.stat().st_uid == os.getuid()
    moved = pc.ok("restore", str(report), "--to", str(home / "back"), env=env)
    assert "Restored" in moved.stdout and digest(home / "back" / "report.odt") == original

    refused = pc.run("restore", str(home / "Documents" / "notes.txt"), "--overwrite", env=env)
    assert refused.code == ExitStatus.INVALID and "--yes" in refused.stderr


def loaded_modules(pc: PC, *args: str, env: dict[str, str]) -> set[str]:
    """The top-level packages a real `helpline` process loaded for ``args`` (read from -X importtime)."""
    full_env = {**pc.env(), **env}
    done = subprocess.run([sys.executable, "-X", "importtime", helpline_bin(), *args], capture_output=True, text=True,
                          env=full_env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
            if line.startswith("import time:")}


def test_a_restore_answering_in_json_starts_restic_without_the_terminal_or_server_code(make_pc, home):
    # restic waits for the CLI to start: a restore that answers a script loads no terminal rendering (rich), no
    # signing (cryptography) and no server models (pydantic); a person's answer still reads as before.
    pc = make_pc("pc")
    env = configure(pc, home)
    pc.ok("snapshot", "now", env=env)
    loaded = loaded_modules(pc, "restore", str(home / "Documents"), "--to", str(home / "one"), "--json", env=env)
    assert "cli" in loaded and "typer" in loaded
    assert not loaded & {"rich", "cryptography", "pydantic"}
    assert digest(home / "one" / "Documents" / "report.odt") == digest(home / "Documents" / "report.odt")
    told = pc.ok("restore", str(home / "Documents"), "--to", str(home / "two"), env=env)
    assert told.stdout.startswith("Restored ") and "[bold]" not in told.stdout


def test_overwrite_asks_first_in_a_terminal_and_keeps_what_it_replaced(make_pc, home):
    pc = make_pc("pc")
    env = configure(pc, home)
    pc.ok("snapshot", "now", env=env)
    notes = home / "Documents" / "notes.txt"
    notes.write_text("scribbled over\n")
    full = {**pc.env(), **env}

    def spawn() -> pexpect.spawn:
        return pexpect.spawn(helpline_bin(), ["restore", str(notes), "--overwrite"], env=full, encoding="utf-8",
                             timeout=60, dimensions=(50, 200))

    child = spawn()
    child.expect("Replace it")
    child.sendline("n")
    child.expect("Nothing was changed")
    child.expect(pexpect.EOF)
    assert notes.read_text() == "scribbled over\n"

    child = spawn()
    child.expect("Replace it")
    child.sendline("y")
    child.expect("kept as")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert notes.read_text() == "remember the milk\n" * 40
    [kept] = notes.parent.glob("notes.txt.replaced-*")
    assert kept.read_text() == "scribbled over\n"


def test_agent_run_once_does_the_scheduled_work(make_pc, home):
    pc = make_pc("pc")
    env = configure(pc, home, wait_on_battery="false")
    ran = pc.ok("agent", "run", "--once", env=env).stdout
    assert "snapshot" in ran and "(first)" in ran
    assert "sample restore from the local repository: ok" in ran and "check of the local repository: sound" in ran
    again = pc.ok("agent", "run", "--once", env=env).stdout
    assert "snapshot" not in again  # nothing is due an instant later
    assert pc.ok("snapshot", "status", "--json", env=env).json()["state"] == "protected"


def test_sigterm_mid_backup_leaves_no_lock_and_the_next_run_succeeds(make_pc, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    rng = random.Random(11)
    for index in range(600):
        (big / f"file-{index:04}.bin").write_bytes(rng.randbytes(512 * 1024))
    pc = make_pc("pc")
    env = {**pc.env(), **configure(pc, big, wait_on_battery="false")}
    service = subprocess.Popen([helpline_bin(), "agent", "run"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        repository = pc.agent_dir / "snapshots" / "repository"

        def mid_backup() -> bool:  # locked, and the first packs of data written
            locks, data = repository / "locks", repository / "data"
            return (locks.is_dir() and any(locks.iterdir()) and data.is_dir()
                    and any(path.is_file() for path in data.rglob("*")))

        until = time.monotonic() + 60
        while time.monotonic() < until and not mid_backup():
            time.sleep(0.05)
        assert mid_backup(), "the backup never got going"
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=60)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(timeout=10)
    assert service.returncode == 0, err
    assert "stopped" in out, out
    assert restic_locks(pc) == [], out + err
    ran = pc.run("snapshot", "now", "--json", env={k: env[k] for k in ("HELPLINE_AGENT_CONFIG", "HOME")})
    assert ran.code == 0, ran.stderr
    [run] = ran.json()
    assert run["status"] == "ok"
    assert pc.ok("snapshot", "list", "--json", env={k: env[k] for k in ("HELPLINE_AGENT_CONFIG", "HOME")}).json()


def test_a_wrong_password_is_said_in_one_clear_line(make_pc, home):
    pc = make_pc("pc")
    env = configure(pc, home)
    pc.ok("snapshot", "now", env=env)
    password = pc.agent_dir / "snapshots" / "keys" / "repository.password"
    password.write_text("not-the-password\n")
    listed = pc.run("snapshot", "list", env=env)
    assert listed.code == ExitStatus.AUTH
    errors = [line for line in listed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "password" in errors[0] and "Traceback" not in listed.stderr
    taken = pc.run("snapshot", "now", env=env)
    assert taken.code == ExitStatus.AUTH and "password" in taken.stderr
    assert pc.ok("snapshot", "status", "--json", env=env).json()["state"] == "failing"


def random_files(folder: Path, count: int, *, seed: int) -> Path:
    """``folder`` with ``count`` files of 512 KiB of random bytes: enough for restic to report progress."""
    folder.mkdir()
    rng = random.Random(seed)
    for index in range(count):
        (folder / f"file-{index:04}.bin").write_bytes(rng.randbytes(512 * 1024))
    return folder


def test_snapshot_now_shows_a_progress_bar_on_a_terminal(make_pc, tmp_path):
    big = random_files(tmp_path / "big", 300, seed=5)
    pc = make_pc("pc")
    env = {**pc.env(), **configure(pc, big)}
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(helpline_bin(), ["snapshot", "now"], env=env, encoding="utf-8", timeout=120,
                          dimensions=(40, 160))
    child.expect(r"Snapshot \(local\)")  # the bar's label, drawn while restic reports progress
    child.expect(r"[\d.]+/[\d.]+ [kMG]B")  # its byte counts (done/total; the message at the end has no slash)
    child.expect(r"Snapshot \S+ in the local repository: 300 new")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    piped = pc.run("snapshot", "now", env=configure(pc, big))
    assert "Snapshot (local)" not in piped.stderr + piped.stdout  # no bar when nobody watches a terminal


def test_restore_shows_a_progress_bar_on_a_terminal(make_pc, tmp_path):
    big = random_files(tmp_path / "big", 200, seed=6)
    pc = make_pc("pc")
    env = {**pc.env(), **configure(pc, big)}
    env.pop("NO_COLOR", None)
    pc.ok("snapshot", "now", env=configure(pc, big))
    back = tmp_path / "back"
    child = pexpect.spawn(helpline_bin(), ["restore", str(big), "--to", str(back)], env=env, encoding="utf-8",
                          timeout=120, dimensions=(40, 160))
    child.expect(r"Restoring big")  # the bar's label, drawn at once, whatever restic reports
    child.expect(r"\d:\d\d:\d\d")  # its elapsed time
    child.expect(r"Restored \S+ from snapshot")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and len(list((back / "big").iterdir())) == 200
    piped = pc.run("restore", str(big), "--to", str(tmp_path / "again"), env=configure(pc, big))
    assert piped.code == 0 and "Restoring" not in piped.stderr + piped.stdout  # no bar without a terminal
