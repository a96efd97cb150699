"""The agent's instance: one for every process of one installation on one boot, another for a copy."""

from __future__ import annotations

import os

from agent import store
from agent.store import AgentState, AgentStore, instance_id
from protocol import agent_requests, signing


def test_one_folder_on_one_boot_is_one_instance(tmp_path, monkeypatch):
    boot = tmp_path / "boot_id"
    boot.write_text("8d1f0c52-7d0a-4a55-9d31-0c1f3c1b2e10\n")
    monkeypatch.setattr(store, "_BOOT_ID", boot)
    folder = tmp_path / "agent"
    folder.mkdir()
    first = instance_id(folder)
    assert first == instance_id(folder) and len(first) == 32
    assert agent_requests._INSTANCE.match(first)
    os.symlink(folder, tmp_path / "link")
    assert instance_id(tmp_path / "link") == first  # the real path counts, not the way to it
    copy = tmp_path / "copy"
    copy.mkdir()
    assert instance_id(copy) != first
    boot.write_text("0a6b3f1e-2c4d-4e5f-8a9b-1c2d3e4f5a6b\n")  # the PC restarted (or the disk booted elsewhere)
    assert instance_id(folder) != first


def test_without_a_boot_id_the_host_name_stands_in(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_BOOT_ID", tmp_path / "missing")
    monkeypatch.setattr(store.socket, "gethostname", lambda: "desk-1")
    here = instance_id(tmp_path)
    monkeypatch.setattr(store.socket, "gethostname", lambda: "desk-2")
    assert instance_id(tmp_path) != here


def test_the_signer_sends_the_instance_signed(tmp_path):
    agents = AgentStore(tmp_path)
    server_key = signing.generate_key()
    signer = agents.signer(AgentState(server_url="https://help.example.com", agent_id="a1", credential="",
                                      server_public_key=signing.public_key_b64(server_key)))
    headers = signer.headers("GET", "/v1/agent/tickets", agent_requests.EMPTY_SHA256)
    assert headers[agent_requests.INSTANCE_HEADER] == instance_id(tmp_path)
    signed = agent_requests.SignedRequest.parse({k.lower(): v for k, v in headers.items()})
    assert not isinstance(signed, str) and signed.instance == instance_id(tmp_path)
    assert agent_requests.verify(signing.public_key_b64(agents.key()), signed.payload("GET", "/v1/agent/tickets"),
                                 signed.signature)
