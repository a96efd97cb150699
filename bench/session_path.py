"""The whole Helpline session path for the session benchmark: a server on loopback, a PC, an engineer.

The server is `helpline server run` on loopback (tests/support/live.py), set up as
people would with the real CLI: an admin creates an engineer, who logs in and
registers the benchmark's SSH key; a ticket is opened and the PC pairs with its
code. The PC's side runs in this process: it offers a session with a fresh host
key, verifies the grant the engineer's request brings against the pinned server
key, says yes (the benchmark is the user), and bridges its relay ticket's
WebSocket to the same session host the "paramiko direct" path uses. The
engineer's side is `helpline connect SESSION --print-config`, whose ssh_config
block (ProxyCommand `helpline relay SESSION`, the host key pinned) the
benchmark's ssh uses.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.server_load import NotMeasured
from tests.support.live import ENGINEER_PASSWORD, PC, LiveServer, create_engineer

ENGINEER = "bench-engineer"
SETUP_TIMEOUT = 120.0


@dataclass
class HelplineSession:
    """What the benchmark's ssh needs to reach the session, and the processes to charge CPU to."""

    config: Path
    destination: str
    env: dict[str, str]
    processes: dict = field(default_factory=dict)


class BenchPC:
    """The PC's side in this process: offer, verify the grant, consent, bridge the relay to the session host."""

    def __init__(self, agent_dir: Path, ticket: str):
        from agent.client import HelplineClient
        from agent.session.host import new_host_key
        from agent.store import AgentStore
        from protocol.sessions import SessionOffer

        store = AgentStore(agent_dir)
        self.state = store.require()
        self.client = HelplineClient.connect(self.state.server_url, agent=store.signer(self.state))
        self.host_key = new_host_key()
        offer = SessionOffer(ticket=ticket, host_key=f"{self.host_key.get_name()} {self.host_key.get_base64()}",
                             platform=platform.system().lower(), username=getpass.getuser())
        self.session = self.client.offer_session(offer)
        self.host = None
        self.problem: str | None = None
        self.joined = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pc", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._serve()
        except Exception as exc:  # reported by the benchmark as the path's problem
            self.problem = f"the PC's side failed: {exc.__class__.__name__}: {getattr(exc, 'message', exc)}"
            self.joined.set()

    def _serve(self) -> None:
        from agent.relay_socket import open_relay
        from agent.session.host import SessionHost, key_fingerprint
        from protocol.grants import verify_grant
        from protocol.sessions import ConsentAnswer

        after, deadline = 0, time.monotonic() + SETUP_TIMEOUT
        while time.monotonic() < deadline:
            for event in self.client.session_events(self.session.id, after=after, wait=10):
                after = max(after, event.seq)
                if event.kind != "request" or event.grant is None:
                    continue
                grant = verify_grant(event.grant, pinned_server_key=self.state.server_public_key,
                                     agent_id=self.state.agent_id, host_key_fingerprint=key_fingerprint(self.host_key),
                                     now=datetime.now(UTC))
                self.host = SessionHost(grant, host_key=self.host_key, grace=0.3)
                self.host.give_consent(grant.grant_id)
                ticket = self.client.answer_session(self.session.id, ConsentAnswer(grant_id=grant.grant_id, approved=True))
                if ticket is None:
                    raise NotMeasured("the server took the approval as a refusal")
                self.host.serve(open_relay(ticket).bridge_to_socket())
                self.joined.set()
                return
        raise NotMeasured("no engineer request reached the PC")

    def close(self) -> None:
        if self.host is not None:
            self.host.end("the bench is over")
            self.host.wait(10)
        self.client.close()


def _ok(pc: PC, *args: str, input: str | None = None) -> str:
    done = pc.run(*args, input=input, timeout=SETUP_TIMEOUT)
    if done.code != 0:
        raise NotMeasured(f"helpline {' '.join(args[:2])} exited {done.code}: {done.stderr.strip()[-300:]}")
    return done.stdout


@contextmanager
def helpline_session(work: Path, key: Path) -> Iterator[HelplineSession]:
    """Set up a server, an engineer and a PC, have the PC offer a session and the engineer get it approved."""
    server = LiveServer(data_dir=work / "server", env={"HELPLINE_LOG_LEVEL": "warning"})
    pc_side: BenchPC | None = None
    try:
        try:
            server.init()
            server.start()
        except RuntimeError as exc:
            raise NotMeasured(f"the Helpline server did not start: {str(exc)[-300:]}") from exc
        admin = PC(work, "admin")
        admin.login(server)
        create_engineer(admin, ENGINEER)
        engineer = PC(work, "engineer")
        engineer.login(server, ENGINEER, ENGINEER_PASSWORD)
        _ok(engineer, "ssh-key", "add", f"{key}.pub")
        ticket = json.loads(_ok(engineer, "ticket", "create", "Session benchmark", "--json"))["number"]
        code = json.loads(_ok(engineer, "ticket", "pair-code", ticket, "--json"))["code"]
        user = PC(work, "user")
        _ok(user, "pair", code, "--server", server.url)
        pc_side = BenchPC(user.agent_dir, ticket)
        config = work / "helpline_ssh_config"
        printed = _ok(engineer, "connect", pc_side.session.id, "--scope", "control", "--scope", "files", "--scope", "forward",
                      "--minutes", "60", "--key", str(key), "--print-config")
        config.write_text(printed)
        if not pc_side.joined.wait(30) or pc_side.problem:
            raise NotMeasured(pc_side.problem or "the PC's side did not join the relay")
        alias = next(line.split()[1] for line in printed.splitlines() if line.startswith("Host "))
        server_pid = server.process.pid if server.process else None
        yield HelplineSession(config, alias, engineer.env(), processes={
            "server": (lambda: _tree(server_pid)) if server_pid else (lambda: []),
            "PC: session host and relay bridge (this process)": lambda: [os.getpid()],
        })
    finally:
        if pc_side is not None:
            pc_side.close()
        server.stop()


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []

