"""A hostile PC chooses its hostname, its ticket's title and its requester name: through the real
server and CLI, none of them writes outside the engineer's chosen folder or reaches the engineer's
(or the user's) terminal as a control sequence."""

from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.identity import TEST_HOSTNAME_ENV
from protocol.errors import ExitStatus
from tests.support.live import ENGINEER_PASSWORD, create_engineer

pytestmark = pytest.mark.e2e

# Only the system facts: enough for a real bundle, quick to gather.
ONLY_SYSTEM = [arg for category in ("hardware", "network", "processes", "services", "software", "logs",
                                    "crashes", "environment") for arg in ("--exclude", category)]
ANSWERS = ["--what", "Screen flickers", "--since", "today", "--tried", "nothing"]

# What a terminal would act on: C0 but newline and tab, DEL, C1, bidi and zero-width format characters.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
ESCAPES = ("\x1b[2J\x1b[H\x1b[1;31m"  # clear the screen, home, red
           "\x1b]0;Helpline: all clear\x07"  # window title, ended by BEL
           "\x1b]8;;https://evil.example/reset\x1b\\call here\x1b]8;;\x1b\\"  # OSC 8 hyperlink
           "\x9b2J\x9b31m"  # C1 CSI: clear and colour again
           "\u202eexe.txt\u202c\x07\x7f\x1b[0m")


def hostile_hostnames(outside: Path) -> list[str]:
    return [
        f"/../../../../../../../../../../..{outside}/.vim/pack/x/start/owned",  # the reviewer's vector
        f"..{'/..' * 12}{outside}/owned",
        "..",
        "..\\..\\..\\..\\Users\\eng\\AppData\\Roaming\\owned",
        "-rf --owned",
    ]


def test_diag_get_writes_only_inside_the_chosen_folder(live_server, admin_pc, make_pc, tmp_path):
    outside = tmp_path / "outside"
    hostnames = hostile_hostnames(outside)
    numbers = [admin_pc.ok("ticket", "create", "Screen flickers", "--json").json()["number"] for _ in hostnames]

    def share(index: int) -> None:
        code = admin_pc.ok("ticket", "pair-code", numbers[index], "--json").json()["code"]
        make_pc(f"hostile-pc-{index}").ok("share", "--code", code, "--server", live_server.url, "--yes", *ANSWERS,
                                          *ONLY_SYSTEM, env={TEST_HOSTNAME_ENV: hostnames[index]})

    with ThreadPoolExecutor(max_workers=len(hostnames)) as pool:  # the PCs share at once, as a fleet would
        list(pool.map(share, range(len(hostnames))))
    for index, (hostname, number) in enumerate(zip(hostnames, numbers)):
        bundles = admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]
        assert [b["hostname"] for b in bundles] == [hostname]  # the server kept what the PC claimed

        engineer_dir = tmp_path / f"engineer-{index}"
        engineer_dir.mkdir()
        got = admin_pc.ok("diag", "get", number, "--json", cwd=engineer_dir).json()
        dest = Path(got["dir"])
        assert dest.parent == engineer_dir.resolve(), hostname  # one component, right in the folder it ran in
        assert os.listdir(engineer_dir) == [dest.name]
        assert not dest.name.startswith((".", "-")) and number in dest.name
        assert json.loads((dest / "manifest.json").read_text())["schema_version"] == 1
        assert not outside.exists(), hostname
        strays = [p for p in tmp_path.rglob("*owned*") if not p.relative_to(tmp_path).parts[0].startswith("engineer-")]
        assert strays == [], hostname

        if index == 0:  # a link planted where the folder will go is refused, never followed
            shutil.rmtree(dest)
            elsewhere = tmp_path / "elsewhere"
            elsewhere.mkdir()
            (engineer_dir / dest.name).symlink_to(elsewhere, target_is_directory=True)
            refused = admin_pc.run("diag", "get", number, cwd=engineer_dir)
            assert refused.code == ExitStatus.INVALID and "link" in refused.stderr, refused.stderr
            assert list(elsewhere.iterdir()) == []

        text = admin_pc.ok("diag", "get", bundles[0]["id"], "--dir", str(tmp_path / f"chosen-{index}")).stdout
        assert "report.html" in text and not RAW_CONTROL.search(text)
        assert (tmp_path / f"chosen-{index}" / "report.html").exists()  # the engineer's own choice is kept


def test_escape_sequences_from_a_pc_reach_no_terminal_raw(server_factory, make_pc):
    server = server_factory(self_service="anyone")
    pc = make_pc("hostile-pc")
    title = f"Printer {ESCAPES} broken"
    requester = f"Dana {ESCAPES}"
    hostname = f"пк-бухгалтерия{ESCAPES}"
    env = {TEST_HOSTNAME_ENV: hostname}
    pc.ok("request", title, "-d", f"details {ESCAPES}\nsecond line", "--name", requester, "--server", server.url, env=env)

    admin = make_pc("admin")
    admin.login(server)
    create_engineer(admin, "alice")
    engineer = make_pc("alice")
    engineer.login(server, "alice", ENGINEER_PASSWORD)
    number = engineer.ok("ticket", "list", "--json").json()[0]["number"]
    engineer.ok("ticket", "note", number, f"Call me {ESCAPES}")

    shown = {
        "ticket list": engineer.ok("ticket", "list").stdout,
        "ticket show": engineer.ok("ticket", "show", number).stdout,
        "agent list": admin.ok("agent", "list").stdout,
        "agent show": admin.ok("agent", "show", admin.ok("agent", "list", "--json").json()[0]["id"]).stdout,
        "status": pc.ok("status", env=env).stdout,
        "status ticket": pc.ok("status", number, env=env).stdout,
    }
    for command, out in shown.items():
        assert not RAW_CONTROL.search(out), f"helpline {command} printed {RAW_CONTROL.search(out).group()!r}:\n{out!r}"
        assert "\\x1b" in out, f"helpline {command} dropped the text instead of showing it:\n{out}"
    assert "Printer" in shown["ticket list"] and "Dana" in shown["ticket show"]
    assert "пк-бухгалтерия" in shown["agent list"]  # a real non-ASCII hostname stays readable

    # --json stays the exact data, with every control escaped inside the JSON strings.
    raw = engineer.ok("ticket", "show", number, "--json").stdout
    assert not RAW_CONTROL.search(raw)
    data = json.loads(raw)
    assert data["title"] == title and data["requester"] == requester
