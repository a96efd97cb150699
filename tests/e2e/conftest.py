"""Fixtures the remote-session journeys share: the help desk (server, engineer, paired PC) and the user's terminals."""

from __future__ import annotations

import pytest

from tests.support.sessions import UserTerminal, make_desk


@pytest.fixture
def desk(live_server, admin_pc, make_pc, tmp_path):
    return make_desk(live_server, admin_pc, make_pc, tmp_path)


@pytest.fixture
def terminals():
    opened: list[UserTerminal] = []
    yield opened
    for terminal in opened:
        terminal.close()
