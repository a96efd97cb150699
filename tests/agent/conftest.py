"""Fixtures of the agent's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A temporary folder, with the agent's configuration pointed inside it and no admin configuration."""
    monkeypatch.setenv("HELPLINE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("HELPLINE_AGENT_CONFIG", raising=False)
    return tmp_path
