"""What a snapshot does before restic starts: nothing that waits on code it does not need."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import sys
from pathlib import Path
from agent.snapshots.jobs import Snapshots
from agent.store import AgentStore
Snapshots(AgentStore(Path(sys.argv[1])))._escrow("local")
print("protocol.snapshots" in sys.modules, "pydantic" in sys.modules)
"""


def test_a_pc_with_no_server_checks_its_escrow_without_loading_the_server_models(tmp_path):
    # Every snapshot asks whether its password still has to go to the server's escrow. On a PC with no server
    # (or once it went) the answer is no, before restic starts: the report's models load meanwhile, on a thread.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HELPLINE_AGENT_CONFIG": str(tmp_path / "agent.toml"),
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "agent")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
