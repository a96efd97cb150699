"""This PC's identity: its Ed25519 key pair and what it says about itself."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import __version__
from protocol import signing
from protocol.schemas import AgentIdentity

_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
#: End-to-end tests set this to make a PC report a hostile hostname, as a PC whose owner
#: renamed it could; it grants nothing a PC's owner cannot already do (the hostname is the
#: PC's own claim), and only describe() reads it.
TEST_HOSTNAME_ENV = "HELPLINE_TEST_HOSTNAME"
#: Test-only, like TEST_HOSTNAME_ENV: end-to-end tests set this to the raw machine id a PC
#: reports (as if read from /etc/machine-id), so two test PCs can claim the same one, as a
#: hostile PC can. It grants nothing: the machine id is evidence the PC sends, never identity.
TEST_MACHINE_ID_ENV = "HELPLINE_TEST_MACHINE_ID"


def machine_id() -> str:
    """A stable, non-reversible id of this PC: evidence the server compares, never proof of identity.

    The raw machine id is hashed with a Helpline-specific prefix: it is not
    sent as is, since other software uses it as an identifier too. Anyone on
    the PC can read it, so the server never lets it stand in for the key
    (see TEST_MACHINE_ID_ENV for tests).
    """
    claimed = os.environ.get(TEST_MACHINE_ID_ENV, "").strip()
    if claimed:
        return _hashed(claimed)
    for path in _MACHINE_ID_FILES:
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw:
            return _hashed(raw)
    return ""


def _hashed(raw: str) -> str:
    return hashlib.sha256(b"helpline-machine-id:" + raw.encode()).hexdigest()


def os_description() -> str:
    system = platform.system()
    if system == "Linux":
        try:
            info = platform.freedesktop_os_release()
            return f"{info.get('PRETTY_NAME', 'Linux')} (kernel {platform.release()})"
        except OSError:
            return f"Linux {platform.release()}"
    if system == "Darwin":
        return f"macOS {platform.mac_ver()[0]}"
    if system == "Windows":
        return f"Windows {platform.version()}"
    return f"{system} {platform.release()}"


def describe(key: Ed25519PrivateKey) -> AgentIdentity:
    """What this PC tells the server about itself; the hostname is its own claim (see TEST_HOSTNAME_ENV)."""
    hostname = os.environ.get(TEST_HOSTNAME_ENV) or socket.gethostname()
    return AgentIdentity(
        public_key=signing.public_key_b64(key),
        hostname=hostname[:255] or "unknown",
        os=os_description()[:200],
        agent_version=__version__,
        machine_id=machine_id(),
    )
