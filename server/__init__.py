"""Helpline server: pairs agents with tickets, stores what they send, relays sessions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("helpline")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
