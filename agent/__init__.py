"""Helpline agent: runs on user PCs to gather diagnostics, take snapshots and host sessions."""

from protocol.version import HELPLINE_VERSION as __version__  # noqa: F401
