"""The OpenAPI spec, fuzzed by schemathesis against the live server: no 5xx, ever."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import token_of

pytestmark = pytest.mark.e2e

AGENT_PATHS = r"^/v1/(agent/|pair$|self-service/|uploads/)"


def schemathesis(server, token: str, cwd: Path, *selection: str) -> tuple[int, str]:
    st = Path(sys.executable).with_name("schemathesis")
    args = [
        str(st), "run", f"{server.url}/openapi.json",
        "--checks", "not_a_server_error",
        "-H", f"Authorization: Bearer {token}",
        "--exclude-path", "/v1/auth/logout",  # it would revoke the token the run uses
        "--exclude-path", "/v1/tokens/{token_id}",  # so would revoking token 1, the run's own
        "--phases", "examples,coverage,fuzzing",
        # One worker: schemathesis compiles code in its worker threads, and CPython 3.11's compile() is not
        # thread-safe ("AST constructor recursion depth mismatch"), which the agent routes' run hit with two.
        "--max-examples", "25", "--workers", "1", "--seed", "1042",
        "--request-timeout", "30",
        *selection,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=cwd)
    return done.returncode, done.stdout[-8000:] + done.stderr[-2000:]


def test_schemathesis_finds_no_server_errors(live_server, admin_pc, make_pc, tmp_path):
    admin_pc.ok("ticket", "create", "Something to find", "--json")
    pc = make_pc("fuzzed-pc")  # enrolled first: the fuzzing uses up the enrollment rate limit
    enroll_token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    pc.ok("agent", "enroll", live_server.url, enroll_token)
    credential = json.loads((pc.agent_dir / "agent.json").read_text())["credential"]

    code, report = schemathesis(live_server, token_of(admin_pc), tmp_path, "--exclude-path-regex", AGENT_PATHS)
    assert code == 0, report
    assert "Authentication failed" not in report, report  # the engineer-facing API was really exercised

    code, report = schemathesis(live_server, credential, tmp_path, "--include-path-regex", AGENT_PATHS)
    assert code == 0, report
    assert '" 500 ' not in live_server.log(), live_server.log()[-3000:]
