"""The whole Helpline session path for the session benchmark: a server on loopback, a PC, an engineer.

The server is `helpline server run` on loopback (tests/support/live.py), set up as
people would with the real CLI: an admin creates an engineer, who logs in and
registers the benchmark's SSH key; a ticket is opened and the PC pairs with its
code. The PC's side runs in this process with the code `helpline session` runs: it
offers a session with a fresh host key, verifies the grant the engineer's
request brings against the pinned server key, says yes (the benchmark is the
user), records, and bridges its relay pass's WebSocket to the same session host
the "paramiko direct" path uses. The
engineer's side is `helpline connect SESSION --print-config`, whose ssh_config
block (ProxyCommand `helpline relay SESSION`, the host key pinned) the
benchmark's ssh uses.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    """The PC's side in this process, with the code `helpline session` runs (agent/session/offer.py):
    offer, verify the grant against the pinned server key, consent (the benchmark is the user), serve."""

    def __init__(self, agent_dir: Path, ticket: str):
        from agent.local import ThisPC
        from agent.store import AgentStore

        self.offer = ThisPC(AgentStore(agent_dir)).session_offer(ticket)
        self.session = self.offer.offer()
        self.live = None
        self.problem: str | None = None
        self.answered = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pc", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from agent.session.offer import Decision

        try:
            request = self.offer.next_request(timeout=SETUP_TIMEOUT)
            self.live = self.offer.answer(request, Decision(True))
        except Exception as exc:  # reported by the benchmark as the path's problem
            self.problem = f"the PC's side failed: {exc.__class__.__name__}: {getattr(exc, 'message', exc)}"
        finally:
            self.answered.set()

    def close(self) -> None:
        if self.live is not None:
            self.live.end("the benchmark is over")
            self.live.finish()
        self.offer.shutdown()


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
        if not pc_side.answered.wait(30) or pc_side.problem:
            raise NotMeasured(pc_side.problem or "the PC's side did not answer")
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

