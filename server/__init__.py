"""Helpline server: pairs agents with tickets, stores what they send, relays sessions."""

from protocol.version import HELPLINE_VERSION as __version__  # noqa: F401
