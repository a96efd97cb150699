"""Helpline agent: runs on user PCs to gather diagnostics, take snapshots and host sessions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("helpline")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
