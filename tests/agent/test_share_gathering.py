"""A share's gathering process (agent.gathering, agent.share_worker): the bundle it makes, the answers settled
while it works, its errors, a cancel, and a process that is never left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from agent import gathering as gathering_module
from agent.gathering import Gathering, spawn_worker
from agent.share import ShareRequest
from protocol.errors import ConflictError, ExitStatus, HelplineError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="collects from this Linux PC")


def _fake_worker(monkeypatch, script: str) -> None:
    """Gatherings start ``script`` instead of the real worker: it reads the request line and does what it says."""
    code = "import json, os, sys, time\nrequest = json.loads(sys.stdin.readline())\n" + textwrap.dedent(script)
    monkeypatch.setattr(gathering_module, "worker_argv", lambda: [sys.executable, "-c", code])


def test_the_answers_and_ticket_settled_while_gathering_reach_the_bundle(isolated) -> None:
    from protocol.archive import inspect_archive

    request = ShareRequest(deadline=20)
    gathering = Gathering(request, work_root=isolated / "work")
    request.what, request.since, request.tried = "Printer offline", "today", "nothing"  # typed meanwhile
    request.ticket, request.ticket_title = "T-1042", "Printer"
    heard: list[tuple[str, str]] = []
    prepared = gathering.result(progress=lambda *event: heard.append(event))
    assert ("processes", "ok") in heard and ("system", "ok") in heard, "every collector's end is heard"
    try:
        listing = inspect_archive(prepared.archive)
        manifest = json.loads(listing.read_member("manifest.json", 1 << 24))
        assert manifest["extra"]["ticket"] == "T-1042" and manifest["extra"]["answers"]["what_happened"] == \
            "Printer offline"
        assert prepared.bundle.manifest == manifest and prepared.report_html.is_file()
        assert {p.category for p in prepared.bundle.preview} >= {"system", "processes"}
        prepared.removal.join(60)
        assert not (prepared.work_dir / "staging").exists(), "the unredacted staging went with the process"
    finally:
        prepared.discard()
    gathering.cancel()  # after the result: the bundle is the caller's, not removed
    assert list((isolated / "work").iterdir()) == []


def test_a_cancelled_gathering_removes_what_it_wrote_and_ends(isolated) -> None:
    gathering = Gathering(ShareRequest(deadline=20), work_root=isolated / "work")
    assert [p.name for p in (isolated / "work").iterdir()], "the work folder exists while gathering"
    gathering.cancel()
    assert list((isolated / "work").iterdir()) == []
    assert gathering._process.poll() is not None, "no gathering process is left behind"


def test_a_cancel_that_cannot_wait_for_the_gathering_removes_its_work_folder(isolated, monkeypatch) -> None:
    _fake_worker(monkeypatch, """
        os.makedirs(os.path.join(request["work"], "staging", "logs"))
        with open(os.path.join(request["work"], "staging", "logs", "raw.log"), "w") as f:
            f.write("password=unredacted\\n")
        print(json.dumps({"progress": ["logs", "running"]}), flush=True)
        time.sleep(60)  # a gathering that does not answer a cancel (a PC this busy)
    """)
    monkeypatch.setattr(Gathering, "CANCEL_WAIT", 0.2)
    heard = []
    gathering = Gathering(ShareRequest(deadline=20), work_root=isolated / "work")
    for _ in range(600):
        if list((isolated / "work").glob("*/staging/logs/raw.log")):
            break
        gathering._ended.wait(0.05)
    gathering._listener = lambda *event: heard.append(event)
    gathering.cancel()
    assert list((isolated / "work").iterdir()) == [], "the unredacted files went although the gathering ran on"
    assert gathering._process.returncode is not None, "the process was stopped"


def test_an_error_of_the_gathering_is_the_same_error_here(isolated, monkeypatch) -> None:
    _fake_worker(monkeypatch, """
        sys.stdin.readline()  # the settled request
        print(json.dumps({"error": {"type": "ConflictError", "message": "T-1042 is closed.",
                                    "hint": "Share to a new ticket with --new.", "status": 5}}), flush=True)
    """)
    gathering = Gathering(ShareRequest(deadline=20), work_root=isolated / "work")
    with pytest.raises(ConflictError) as raised:
        gathering.result()
    assert raised.value.message == "T-1042 is closed." and raised.value.hint == "Share to a new ticket with --new."
    assert raised.value.status == ExitStatus(5)
    assert list((isolated / "work").iterdir()) == []


def test_a_gathering_that_ends_without_a_word_says_so(isolated, monkeypatch) -> None:
    _fake_worker(monkeypatch, "sys.exit(3)")
    gathering = Gathering(ShareRequest(deadline=20), work_root=isolated / "work")
    with pytest.raises(HelplineError, match=r"stopped unexpectedly \(status 3\)"):
        gathering.result()
    assert list((isolated / "work").iterdir()) == []


def test_what_the_worker_does_not_know_is_not_a_message(isolated, monkeypatch) -> None:
    _fake_worker(monkeypatch, """
        print("a stray line from some library", flush=True)
        print(json.dumps({"unknown": 1}), flush=True)
        print(json.dumps({"progress": ["system", "ok"]}), flush=True)
        sys.stdin.readline()
        print(json.dumps({"error": {"type": "NotAnError", "message": "odd", "hint": None, "status": 999}}), flush=True)
    """)
    gathering = Gathering(ShareRequest(deadline=20), work_root=isolated / "work")
    heard = []
    with pytest.raises(HelplineError, match="odd") as raised:
        gathering.result(progress=lambda *event: heard.append(event))
    assert type(raised.value) is HelplineError and raised.value.status == ExitStatus.ERROR
    assert heard == [("system", "ok")]


def test_the_gathering_runs_in_a_session_of_its_own(isolated) -> None:
    """The terminal's Ctrl-C goes to the command only: it stops the gathering (cancel) and says so itself."""
    gathering = Gathering(ShareRequest(deadline=20), work_root=isolated / "work")
    try:
        pid = gathering._process.pid
        assert os.getsid(pid) == pid != os.getsid(0)
    finally:
        gathering.cancel()


def test_a_worker_nobody_asks_ends_by_itself(isolated) -> None:
    """`helpline share --bogus` starts a worker before it knows the options are wrong: it ends with the command."""
    worker = spawn_worker()
    worker.stdin.close()  # the command ended without asking
    assert worker.wait(60) == 0
    assert worker.stdout.read() == b""


def test_the_worker_never_runs_code_from_the_current_folder(tmp_path) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "__init__.py").write_text("raise SystemExit('imported from the current folder')\n")
    done = subprocess.run(gathering_module.worker_argv(), input=b"", capture_output=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
