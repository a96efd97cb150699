"""Installing the agent the way a PC gets it: deploy/agent/install.sh into a temporary prefix.

One wheel of the working tree is built per test session (per xdist worker) and every install in the
session installs from it; its dependencies come from the package index pip is configured with, as on a
fresh machine (pip's cache makes the second install quick). The tests never start a service: systemd is
not PID 1 here, so they install with --no-start and run ``PREFIX/bin/helpline agent run`` as a child.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live import base_env

ROOT = Path(__file__).resolve().parents[2]
AGENT_DEPLOY = ROOT / "deploy" / "agent"
INSTALL_SH = AGENT_DEPLOY / "install.sh"
UNINSTALL_SH = AGENT_DEPLOY / "uninstall.sh"


@pytest.fixture
def backend() -> str:
    """One database backend for the deployment tests: what they check (scripts, units, the agent's way to
    the server) does not depend on it, and each install costs seconds."""
    chosen = [b.strip() for b in os.environ.get("HELPLINE_TEST_DATABASES", "sqlite").split(",") if b.strip()]
    return "sqlite" if "sqlite" in chosen or not chosen else chosen[0]


@pytest.fixture(scope="session")
def agent_wheel(tmp_path_factory) -> Path:
    """A wheel of the working tree, built once per session."""
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("wheel-build")
    # Build from a copy of the tree without the tests' and caches' bulk: setuptools writes build/ and
    # *.egg-info into the source folder, which must not race with other workers or dirty the worktree.
    source = build / "helpline"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "tests", "bench", "__pycache__",
                                                                "*.egg-info", "build", ".pytest_cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [wheel] = out.glob("helpline-*.whl")
    return wheel


@dataclass
class Installation:
    """Where one test's install.sh puts things."""

    root: Path

    @property
    def prefix(self) -> Path:
        return self.root / "opt" / "helpline-agent"

    @property
    def state_dir(self) -> Path:
        return self.root / "var" / "lib" / "helpline-agent"

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc" / "systemd" / "system"

    @property
    def user_unit_dir(self) -> Path:
        return self.root / "etc" / "systemd" / "user"

    @property
    def helpline(self) -> Path:
        return self.prefix / "bin" / "helpline"

    def options(self) -> list[str]:
        return ["--prefix", str(self.prefix), "--state-dir", str(self.state_dir), "--unit-dir", str(self.unit_dir),
                "--user-unit-dir", str(self.user_unit_dir), "--bin-dir", "none", "--python", sys.executable,
                "--no-start"]

    def env(self) -> dict[str, str]:
        """The environment of an admin's shell: nothing of Helpline's, and none of the test run's PYTHONPATH
        (the installed agent must run on its own venv's code)."""
        env = base_env()
        env.pop("PYTHONPATH", None)
        return env

    def run(self, script: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None,
            trace: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``script`` with sh; with ``trace``, under strace, recording every program started and its argv."""
        command = ["sh", str(script), *args]
        if trace is not None:
            command = ["strace", "-f", "-qq", "-e", "trace=execve", "-s", "100000", "-o", str(trace), *command]
        return subprocess.run(command, input=input, capture_output=True, text=True, env={**self.env(), **(env or {})},
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)


@pytest.fixture
def installation(tmp_path) -> Installation:
    return Installation(tmp_path / "pc")
