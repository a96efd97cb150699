"""A PC over its upload quota, and a closed ticket, through the real CLI and server: one clear line,
the documented exit status, and the bundle kept in the outbox until it can be delivered."""

from __future__ import annotations

import pytest

from protocol.errors import ExitStatus
from tests.e2e.test_share import ANSWERS

pytestmark = pytest.mark.e2e


def queued(pc) -> list:
    box = pc.agent_dir / "outbox"
    return sorted(box.glob("*.tar.gz")) if box.exists() else []


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), result.stderr
    return lines[0]


def test_a_share_over_quota_fails_in_one_line_and_is_delivered_once_the_quota_frees(server_factory, make_pc):
    server = server_factory(uploads__max_stored_bytes_per_pc="1000")
    admin = make_pc("admin")
    admin.login(server)
    number = admin.ok("ticket", "create", "Mail client broken", "--json").json()["number"]
    code = admin.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")

    result = user.run("share", "--code", code, "--server", server.url, "--yes", *ANSWERS, "--exclude", "processes")
    assert result.code == ExitStatus.RATE_LIMITED, result.stderr
    line = one_line_error(result)
    assert "quota of 1.0 kB" in line and f"The bundle is queued for {number}." in line
    assert "--send-queued" in result.stderr
    assert len(queued(user)) == 1
    assert admin.ok("ticket", "show", number, "--json").json()["bundles"] == []
    assert "upload.refused" in admin.ok("audit", "--action", "upload.refused", "--json").stdout

    server.env["HELPLINE_UPLOADS__MAX_STORED_BYTES_PER_PC"] = str(1 << 30)  # the admin raises the quota
    server.restart()
    assert f"{number}: delivered" in user.ok("share", "--send-queued").stdout
    assert queued(user) == []
    assert len(admin.ok("ticket", "show", number, "--json").json()["bundles"]) == 1


def test_a_closed_ticket_refuses_a_share_and_keeps_its_bundles(live_server, admin_pc, make_pc):
    number = admin_pc.ok("ticket", "create", "Printer offline", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("share", "--code", code, "--server", live_server.url, "--yes", *ANSWERS, "--exclude", "processes")
    admin_pc.ok("ticket", "update", number, "--status", "closed", "--yes")

    result = user.run("share", "--ticket", number, "--yes", *ANSWERS, "--exclude", "processes")
    assert result.code == ExitStatus.CONFLICT, result.stderr
    assert one_line_error(result) == f"error: {number} is closed; it takes no more diagnostics."
    assert queued(user) == []  # the PC saw the ticket closed before gathering anything
    assert len(admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]) == 1


def test_a_share_to_a_full_server_is_queued_and_sent_once_there_is_room(server_factory, make_pc):
    server = server_factory(uploads__min_free_bytes=str(1 << 62))  # more headroom than any disk: the server is full
    admin = make_pc("admin")
    admin.login(server)
    number = admin.ok("ticket", "create", "Disk full", "--json").json()["number"]
    code = admin.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")

    result = user.run("share", "--code", code, "--server", server.url, "--yes", *ANSWERS, "--exclude", "processes")
    assert result.code == ExitStatus.UNAVAILABLE, result.stderr
    line = one_line_error(result)
    assert "disk is too full" in line and f"The bundle is queued for {number}." in line
    assert len(queued(user)) == 1
    assert "upload.refused" in admin.ok("audit", "--action", "upload.refused", "--json").stdout

    del server.env["HELPLINE_UPLOADS__MIN_FREE_BYTES"]  # room again
    server.restart()
    assert f"{number}: delivered" in user.ok("share", "--send-queued").stdout
    assert queued(user) == [] and len(admin.ok("ticket", "show", number, "--json").json()["bundles"]) == 1
