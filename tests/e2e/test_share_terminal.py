"""`helpline share` on a real terminal (a pty): the three questions, the preview, the
confirmation and the progress bars, as a person sees them."""

from __future__ import annotations

import json
import subprocess
import sys

import pexpect
import pytest

from tests.support.live import helpline_bin
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def spawn(pc, *args: str) -> pexpect.spawn:
    env = pc.env()
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    return pexpect.spawn(helpline_bin(), list(args), env=env, encoding="utf-8", timeout=60, dimensions=(50, 160))


def test_questions_preview_and_refusal_on_a_terminal(live_server, admin_pc, make_pc, tmp_path):
    number = admin_pc.ok("ticket", "create", "Terminal test", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)

    child = spawn(user, "share", "--ticket", number)
    child.expect("What happened\\?")
    child.sendline("Outlook [crashes] on start")
    child.expect("Since when, and how often\\?")
    child.sendline("since Monday")
    child.expect("What have you already tried\\?")
    child.sendline("a reboot")
    child.expect("What will be sent")
    child.expect("report.html")
    child.expect(f"Send to {number} 'Terminal test'\\? \\[y/N\\]")
    child.sendline("n")
    child.expect("Nothing was sent")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert admin_pc.ok("ticket", "show", number, "--json").json()["bundles"] == []

    child = spawn(user, "share", "--ticket", number, "--what", "Outlook [crashes] on start", "--since", "Monday", "--tried", "reboot")
    child.expect(f"Send to {number} 'Terminal test'\\?")
    child.sendline("y")
    child.expect("your diagnostics were delivered")
    assert number in child.before and "\x1b[" in child.before  # colour (bold number) on a terminal only
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    bundles = admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]
    assert len(bundles) == 1
    dest = tmp_path / "got"
    admin_pc.ok("diag", "get", bundles[0]["id"], "--dir", str(dest))
    manifest = json.loads((dest / "manifest.json").read_text())
    assert "Outlook [crashes] on start" in json.dumps(manifest)


def _gathered_so_far(pc) -> list:
    """Facts the collectors of a share under way have written (its work folders' staging)."""
    return sorted((pc.agent_dir / "work").glob("share-*/staging/*/facts.json"))


def test_the_collectors_work_while_the_person_answers(make_pc, tmp_path):
    # The gathering starts before the questions: by the time the first one waits for an answer, collectors
    # have written their facts; the answers still reach the bundle, and nothing stays in the work folder.
    user = make_pc("asked")
    target = tmp_path / "diag.tar.gz"
    child = spawn(user, "share", "--output", str(target))
    child.expect("What happened\\?")
    wait_for(lambda: _gathered_so_far(user), "facts gathered while the question waits", seconds=30, every=0.05)
    child.sendline("Printer offline")
    child.expect("Since when, and how often\\?")
    child.sendline("today")
    child.expect("What have you already tried\\?")
    child.sendline("turned it off and on")
    child.expect("Saved to")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    from protocol.archive import inspect_archive

    summary = json.loads(inspect_archive(target).read_member("summary.json", 1 << 22))
    assert summary["answers"] == {"what_happened": "Printer offline", "since_when": "today",
                                  "already_tried": "turned it off and on"}
    assert list((user.agent_dir / "work").glob("share-*")) == []

    # Stopped at a question while gathering: what was gathered goes too, and so does what a share that crashed
    # earlier left (its process is gone).
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=60)
    crashed = user.agent_dir / "work" / f"share-{int(gone.stdout)}-crash1" / "staging" / "logs"
    crashed.mkdir(parents=True)
    (crashed / "raw.log").write_text("password=unredacted\n")
    child = spawn(user, "share", "--output", str(tmp_path / "second.tar.gz"))
    child.expect("What happened\\?")
    wait_for(lambda: _gathered_so_far(user), "facts gathered while the question waits", seconds=30, every=0.05)
    child.sendintr()
    child.expect("Nothing was sent")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert list((user.agent_dir / "work").glob("share-*")) == [] and not (tmp_path / "second.tar.gz").exists()
