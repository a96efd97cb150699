"""this_pc(): the one way user-facing commands reach this PC's agent identity."""

from __future__ import annotations

import stat

from agent.local import ThisPC, this_pc
from agent.store import AgentState, AgentStore


def test_this_pc_uses_the_folder_helpline_agent_dir_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPLINE_AGENT_DIR", str(tmp_path / "agent"))
    pc = this_pc()
    assert isinstance(pc, ThisPC) and pc.store.directory == tmp_path / "agent"
    assert pc.link() is None
    state = AgentState(server_url="http://127.0.0.1:1", agent_id="a1", credential="hla_x", server_public_key="k",
                       tickets=["T-1001"])
    AgentStore(tmp_path / "agent").save(state)
    assert this_pc().link() == state


def test_the_store_keeps_identity_files_private(tmp_path):
    store = AgentStore(tmp_path / "agent")
    store.key()
    store.save(AgentState(server_url="http://127.0.0.1:1", agent_id="a1", credential="hla_x", server_public_key="k"))
    assert stat.S_IMODE((tmp_path / "agent").stat().st_mode) == 0o700
    for path in (tmp_path / "agent").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(store.folder("outbox").stat().st_mode) == 0o700
