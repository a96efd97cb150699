"""Fixtures for the agent's tests: a PC whose configuration is the test's own."""

from __future__ import annotations

import pytest


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A temporary folder, with Helpline's configuration pointed into it (no agent.toml of this machine's)."""
    monkeypatch.setenv("HELPLINE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("HELPLINE_AGENT_CONFIG", raising=False)
    return tmp_path
