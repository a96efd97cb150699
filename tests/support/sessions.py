"""Remote-session journeys as people run them: the user's `helpline session` on a real terminal
(pexpect, a pty), the engineer's `helpline connect` running their real OpenSSH `ssh` and `sftp`
through the real relay of a server on loopback, with an SSH key made by ssh-keygen."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect

from tests.support.live import ENGINEER_PASSWORD, PC, LiveServer, create_engineer, helpline_bin

ENGINEER = "alice"
STEP = 60  # seconds any one step of a journey may take


def ssh_keygen(folder: Path, name: str = "id_ed25519") -> Path:
    """A fresh Ed25519 key pair made by OpenSSH's ssh-keygen; the private key's path (the .pub is beside it)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@engineer", "-f", str(key)],
                   check=True, timeout=STEP)
    return key


@dataclass
class Desk:
    """A server, an engineer with a registered SSH key, and a user's PC paired to the engineer's ticket."""

    server: LiveServer
    engineer: PC
    user: PC
    ticket: str
    key: Path
    tmp: Path

    def sessions(self) -> list[dict]:
        return self.engineer.ok("sessions", "--ticket", self.ticket, "--json").json()

    def session(self, session_id: str) -> dict:
        return next(s for s in self.engineer.ok("sessions", "--json").json() if s["id"] == session_id)

    def wait_for_state(self, session_id: str, *states: str, timeout: float = STEP) -> dict:
        """The session once it is in one of ``states`` (polled, bounded); AssertionError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.session(session_id)
            if found["state"] in states or time.monotonic() > deadline:
                assert found["state"] in states, f"session stayed {found['state']}: {found}"
                return found
            time.sleep(0.3)


def make_desk(server: LiveServer, admin: PC, make_pc, tmp: Path) -> Desk:
    create_engineer(admin, ENGINEER)
    engineer = make_pc("engineer")
    engineer.login(server, ENGINEER, ENGINEER_PASSWORD)
    key = ssh_keygen(tmp / "keys")
    engineer.ok("ssh-key", "add", f"{key}.pub")
    number = engineer.ok("ticket", "create", "Printer offline", "--assign", ENGINEER, "--json").json()["number"]
    code = engineer.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("pair", code, "--server", server.url)
    return Desk(server, engineer, user, number, key, tmp)


class UserTerminal:
    """`helpline session` on the user's real terminal: offered, answered and watched as a person would."""

    def __init__(self, desk: Desk, *args: str, run_as: tuple[str, ...] = ()):
        """``run_as`` is a command that runs `helpline` as another OS user (like setpriv with its options)."""
        self.desk = desk
        env = desk.user.env()
        env.pop("NO_COLOR", None)
        env["TERM"] = "xterm-256color"
        argv = [*run_as, helpline_bin(), "session", "--ticket", desk.ticket, *args]
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, timeout=STEP, dimensions=(40, 120))
        self.child.expect(b"Waiting for an engineer")
        self.session_id = self._offered()

    def _offered(self) -> str:
        deadline = time.monotonic() + STEP
        while time.monotonic() < deadline:
            waiting = [s for s in self.desk.sessions() if s["state"] == "waiting"]
            if waiting:
                return waiting[0]["id"]
            time.sleep(0.2)
        raise AssertionError("the PC's offer never showed up on the server")

    def asked(self) -> bytes:
        """Wait for the consent prompt; what the terminal showed up to it."""
        self.child.expect(b"Type yes or no")
        return self.child.before

    def approve(self) -> None:
        self.asked()
        self.child.sendline(b"yes")
        self.child.expect(b"Approved")

    def refuse(self) -> None:
        self.asked()
        self.child.sendline(b"no")

    def end_key(self) -> None:
        self.child.send(b"\x1d")  # Ctrl-]

    def finished(self, timeout: float = STEP) -> bytes:
        """Wait for `helpline session` to exit; everything it showed since the last expect."""
        self.child.expect(pexpect.EOF, timeout=timeout)
        shown = self.child.before
        self.child.close()
        return shown

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


class EngineerRun:
    """`helpline connect …` (and the ssh it becomes) running in the background, its output collected."""

    def __init__(self, desk: Desk, *args: str, stdin=subprocess.DEVNULL):
        self.process = subprocess.Popen([helpline_bin(), "connect", *args], env=desk.engineer.env(), stdin=stdin,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.out = b""

    def read_until(self, marker: bytes, timeout: float = STEP) -> bytes:
        """Read standard output until ``marker`` shows (bounded); everything read so far."""
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while marker not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, f"{marker!r} not seen; got {self.out[-400:]!r}"
            if select.select([fd], [], [], min(left, 0.5))[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"output ended before {marker!r}; got {self.out[-400:]!r} / {self.process.stderr.read()!r}"
                self.out += chunk
        return self.out

    def finish(self, timeout: float = STEP) -> tuple[int, bytes, bytes]:
        """(exit status, all of standard output, standard error) once it ends."""
        out, err = self.process.communicate(timeout=timeout)
        self.out += out
        return self.process.returncode, self.out, err

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def printed_config(desk: Desk, session_id: str, *scopes: str) -> tuple[Path, str, EngineerRun]:
    """Start `helpline connect SESSION --print-config` for ``scopes``; (where the block will be, the host alias, the run)."""
    args = [session_id, "--print-config", "--key", str(desk.key)]
    for scope in scopes:
        args += ["--scope", scope]
    from cli.commands.connect import host_alias

    # The alias is the session's short id, which runs past 8 characters when those are digits alone.
    return desk.tmp / f"ssh_config-{session_id[:8]}", host_alias(session_id), EngineerRun(desk, *args)


def save_config(run: EngineerRun, path: Path) -> Path:
    status, out, err = run.finish()
    assert status == 0, err.decode(errors="replace")
    path.write_bytes(out)
    return path


def tool(desk: Desk, argv: list[str], *, timeout: float = STEP, **kwargs) -> subprocess.CompletedProcess:
    """Run OpenSSH's ``ssh``/``sftp`` as the engineer (their Helpline login reaches `helpline relay`)."""
    return subprocess.run(argv, env=desk.engineer.env(), capture_output=True, timeout=timeout,
                          stdin=kwargs.pop("stdin", subprocess.DEVNULL), **kwargs)


def pid_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie nobody reaped yet is gone for our purpose
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def cast_output(path: Path) -> str:
    """The terminal output an asciicast v2 file holds, joined."""
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    return "".join(event[2] for event in map(json.loads, lines[1:]) if event[1] == "o")
