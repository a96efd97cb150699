"""The real thing for end-to-end tests: `helpline server run` on uvicorn over loopback,
and the installed `helpline` command run as a subprocess, as a person would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import HOST, free_port  # noqa: F401 - re-exported for tests

ADMIN = "root-admin"
ADMIN_PASSWORD = "admin-password-for-tests"
START_TIMEOUT = 30.0


def helpline_bin() -> str:
    """The console script installed next to this interpreter (the venv's), else on PATH."""
    candidate = Path(sys.executable).with_name("helpline")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("helpline")
    if not found:
        raise RuntimeError("the helpline command is not installed; run the README's test command")
    return found


def base_env() -> dict[str, str]:
    """The environment minus anything that would point the CLI at a real user's files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


@dataclass
class LiveServer:
    """One server process with its own data directory and database."""

    data_dir: Path
    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    #: A data folder that `helpline server init` set up earlier, whose database this server's
    #: database copies (PostgreSQL: made from its template database; SQLite: the file is copied).
    template: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _env(self) -> dict[str, str]:
        env = base_env()
        env.update(self.env)
        return env

    def init(self) -> None:
        """`helpline server init` with the first admin, as an admin would on a new server.

        With a ``template``, the database already holds what init creates (schema,
        first admin), so only the server's own files are written: a config with a
        fresh secret; the signing key is made at the first start, as init would.
        """
        if self.template is not None:
            self._init_from_template()
            return
        args = [helpline_bin(), "server", "init", "--data-dir", str(self.data_dir), "--admin", ADMIN, "--password-stdin"]
        if self.database_url:
            args += ["--database-url", self.database_url]
        done = subprocess.run(args, input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, env=self._env(), timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"server init failed ({done.returncode}): {done.stderr}{done.stdout}")

    def _init_from_template(self) -> None:
        self.data_dir.mkdir(parents=True, mode=0o700)
        if self.database_url is None:
            shutil.copyfile(self.template / "helpline.db", self.data_dir / "helpline.db")
        lines = [f"data_dir = {json.dumps(str(self.data_dir))}", f"secret_key = {json.dumps(secrets.token_urlsafe(48))}"]
        if self.database_url:
            lines.append(f"database_url = {json.dumps(self.database_url)}")
        config = self.data_dir / "server.toml"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)

    def start(self) -> None:
        """Start the server and wait until it answers as itself.

        A port that was free a moment ago can be taken by another test's server before
        ours binds it, so readiness counts only when the answer carries this server's
        own public key; a port lost that way is replaced by a fresh one (bounded tries).
        """
        chosen_here = not self.port
        for _ in range(5):
            self.port = self.port or free_port()
            if self._start_on_port():
                return
            if not chosen_here:  # a restart keeps its address, or the test's clients would lose it
                break
            self.port = 0
        raise RuntimeError(f"server could not bind port {self.port or 'any'}:\n{self.log()}")

    def _own_public_key(self) -> str | None:
        """This server's public key, or None while it has none yet (a replica makes its key when it starts)."""
        from protocol import signing

        path = Path(self.env.get("HELPLINE_SIGNING_KEY_FILE") or self.data_dir / "server-signing-key.pem")
        return signing.public_key_b64(signing.load_private_key(path)) if path.exists() else None

    def _answers_as_itself(self, expected_key: str | None) -> bool:
        if expected_key is None:
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                if resp.status != 200:
                    return False
            with urllib.request.urlopen(f"{self.url}/v1/server", timeout=1) as resp:
                return json.loads(resp.read()).get("public_key") == expected_key
        except (OSError, ValueError):
            return False

    def _start_on_port(self) -> bool:
        """Start on self.port; True once it answers as itself, False if the port was taken."""
        self.log_path = self.data_dir / "server.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [helpline_bin(), "server", "run", "--data-dir", str(self.data_dir), "--host", HOST, "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.log().lower():
                    return False
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if self._answers_as_itself(self._own_public_key()):
                return True
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready in {START_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after a bounded wait."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


class PC:
    """A computer with its own Helpline config and agent state, running the real CLI."""

    def __init__(self, root: Path, name: str = "pc"):
        self.config_dir = root / name / "config"
        self.agent_dir = root / name / "agent"

    def env(self) -> dict[str, str]:
        env = base_env()
        env["HELPLINE_CONFIG_DIR"] = str(self.config_dir)
        env["HELPLINE_AGENT_DIR"] = str(self.agent_dir)
        return env

    def run(self, *args: str, input: str | None = None, timeout: float = 120, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Result:
        full_env = self.env()
        full_env.update(env or {})
        done = subprocess.run([helpline_bin(), *args], input=input, capture_output=True, text=True, env=full_env,
                              timeout=timeout, cwd=cwd)
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, input: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
        result = self.run(*args, input=input, env=env, cwd=cwd)
        assert result.code == 0, f"helpline {' '.join(args)} exited {result.code}:\n{result.stdout}\n{result.stderr}"
        return result

    def login(self, server: LiveServer, username: str = ADMIN, password: str = ADMIN_PASSWORD) -> Result:
        return self.ok("login", server.url, "-u", username, "--password-stdin", input=password + "\n")


ENGINEER_PASSWORD = "engineer-password-1"


def create_engineer(admin_pc: PC, username: str = "alice", role: str = "engineer") -> None:
    """Have the admin create an account, as `helpline account create` does."""
    admin_pc.ok("account", "create", username, "--role", role, "--name", username.title(), "--org", "IT Support",
                "--password-stdin", input=ENGINEER_PASSWORD + "\n")


def json_request(server: LiveServer, method: str, path: str, token: str | None = None, body: dict | None = None):
    """Call the API directly; return (status, parsed JSON body)."""
    import urllib.error

    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{server.url}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def token_of(pc: PC) -> str:
    return json.loads((pc.config_dir / "credentials.json").read_text())["token"]
