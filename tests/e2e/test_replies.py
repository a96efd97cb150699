"""Users talk back through the real CLI: `helpline reply` with a file from the PC, and the
engineer reads it on the timeline and saves the file under a safe name."""

from __future__ import annotations

import hashlib
import os

import pytest

from protocol.errors import ExitStatus

pytestmark = pytest.mark.e2e


def test_a_reply_with_a_file_reaches_the_engineer(live_server, admin_pc, make_pc, tmp_path):
    number = admin_pc.ok("ticket", "create", "Outlook crashes", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)

    shot = tmp_path / "..error\x1b[2J shot.png"
    data = os.urandom(20_000)
    shot.write_bytes(data)
    said = user.ok("reply", "It crashed again \x1b]0;pwned\x07at 10:15", "--file", str(shot))
    assert number in said.stdout and "Outlook crashes" in said.stdout

    shown = admin_pc.ok("ticket", "show", number).stdout
    assert "It crashed again" in shown and "\x1b" not in shown and "\\x1b" in shown
    detail = admin_pc.ok("ticket", "show", number, "--json").json()
    [attached] = detail["attachments"]
    assert detail["timeline"][-1]["kind"] == "reply" and attached["size"] == len(data)
    assert "/" not in attached["filename"] and not attached["filename"].startswith(".")

    inbox = tmp_path / "inbox"
    saved = admin_pc.ok("ticket", "attachment", number, attached["id"][:8], "--dir", str(inbox), "--json").json()
    path = inbox / attached["filename"]
    assert saved["path"] == str(path.resolve()) and list(inbox.iterdir()) == [path]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    again = admin_pc.run("ticket", "attachment", number, attached["id"], "--dir", str(inbox))
    assert again.code == ExitStatus.CONFLICT and path.read_bytes() == data

    # The user's own status shows the reply too; a closed ticket takes no more.
    assert "It crashed again" in user.ok("status").stdout
    admin_pc.ok("ticket", "close", number, "--yes")
    refused = user.run("reply", "still there?", "--ticket", number)
    assert refused.code == ExitStatus.CONFLICT and "closed" in refused.stderr


def test_a_reply_needs_a_ticket_and_a_small_file(live_server, admin_pc, make_pc, tmp_path):
    number = admin_pc.ok("ticket", "create", "Printer", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * (600 * 1024))
    too_big = user.run("reply", "log attached", "--file", str(big))
    assert too_big.code == ExitStatus.INVALID and "KiB" in too_big.stderr
    missing = user.run("reply", "log attached", "--file", str(tmp_path / "nope.log"))
    assert missing.code == ExitStatus.INVALID
    assert admin_pc.ok("ticket", "show", number, "--json").json()["timeline"][-1]["kind"] != "reply"

    admin_pc.ok("ticket", "close", number, "--yes")
    nothing_open = user.run("reply", "hello")
    assert nothing_open.code == ExitStatus.CONFIG and "no open ticket" in nothing_open.stderr
