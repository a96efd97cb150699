"""Helpline agent: runs on user PCs to gather diagnostics, take snapshots and host sessions."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # The version is read from the installed package's metadata on first use: importing
    # importlib.metadata costs every command that never asks (the share path among them).
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("helpline")
    except PackageNotFoundError:  # running from a source tree that is not installed
        found = "0.0.0"
    globals()["__version__"] = found
    return found
