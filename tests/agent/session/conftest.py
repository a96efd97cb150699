"""Shared fixtures for the session tests: keys, grants, and a session host reached in-process over a socket pair."""

from __future__ import annotations

import io
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.session.host import SessionHost, key_fingerprint, new_host_key
from protocol.grants import SessionGrant, openssh_fingerprint

AGENT_ID = "agent-7f3c"


@dataclass
class EngineerKey:
    """An engineer's SSH key in the three forms the tests need."""

    pkey: paramiko.Ed25519Key
    private_pem: bytes
    line: str

    def write(self, directory: Path) -> Path:
        path = directory / "id_ed25519"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.private_pem)
        (directory / "id_ed25519.pub").write_text(self.line + "\n")
        return path


def make_engineer_key() -> EngineerKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return EngineerKey(paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode())), pem, line + " engineer@helpdesk")


@pytest.fixture
def engineer() -> EngineerKey:
    return make_engineer_key()


@pytest.fixture
def host_key() -> paramiko.Ed25519Key:
    return new_host_key()


@pytest.fixture
def make_grant(engineer: EngineerKey, host_key: paramiko.Ed25519Key) -> Callable[..., SessionGrant]:
    """A valid grant for AGENT_ID and ``host_key`` (control scope unless told), with any field changed."""

    def make(**changes) -> SessionGrant:
        now = datetime.now(timezone.utc)
        fields = dict(
            grant_id=str(uuid.uuid4()),
            nonce=uuid.uuid4().hex + uuid.uuid4().hex,
            agent_id=AGENT_ID,
            host_key_fingerprint=key_fingerprint(host_key),
            ticket="T-1042",
            engineer_username="ana",
            engineer_name="Ana Silva",
            organisation="Example Support",
            engineer_key=engineer.line,
            engineer_key_fingerprint=openssh_fingerprint(engineer.line),
            scopes={"view", "control"},
            not_before=now - timedelta(seconds=5),
            expires_at=now + timedelta(minutes=10),
            max_duration_seconds=600,
        )
        fields.update(changes)
        return SessionGrant(**fields)

    return make


def read_until(channel: paramiko.Channel, marker: str, timeout: float = 5.0) -> str:
    """Read ``channel`` until ``marker`` shows up (or fail after ``timeout`` seconds)."""
    seen = b""
    until = time.monotonic() + timeout
    channel.settimeout(0.1)
    while marker.encode() not in seen:
        if time.monotonic() > until:
            raise AssertionError(f"{marker!r} not seen within {timeout}s; got {seen[-400:]!r}")
        try:
            data = channel.recv(65536)
        except socket.timeout:
            continue
        if not data:
            raise AssertionError(f"channel closed before {marker!r}; got {seen[-400:]!r}")
        seen += data
    return seen.decode("utf-8", "replace")


@dataclass
class Link:
    """A session host and one in-process engineer connection to it."""

    host: SessionHost
    client: paramiko.Transport

    def login(self, key: paramiko.PKey, username: str = "ana") -> None:
        self.client.auth_publickey(username, key)

    def shell(self, cols: int = 100, rows: int = 30) -> paramiko.Channel:
        channel = self.client.open_session(timeout=5)
        channel.get_pty("xterm", cols, rows)
        channel.invoke_shell()
        return channel


@pytest.fixture
def connect(host_key: paramiko.Ed25519Key) -> Iterator[Callable[..., Link]]:
    """Start a SessionHost for a grant and connect a paramiko client to it over a socket pair."""
    opened: list[Link] = []

    def open_link(grant: SessionGrant, *, consent: bool = True, **options) -> Link:
        options.setdefault("shell", ["/bin/sh"])
        host = SessionHost(grant, host_key=host_key, grace=0.3, **options)
        if consent:
            host.give_consent(grant.grant_id)
        server_side, client_side = socket.socketpair()
        host.serve(server_side)
        client = paramiko.Transport(client_side)
        client.start_client(timeout=5)
        assert client.get_remote_server_key().asbytes() == host_key.asbytes()
        link = Link(host, client)
        opened.append(link)
        return link

    yield open_link
    for link in opened:
        link.client.close()
        link.host.end("the test is over")
