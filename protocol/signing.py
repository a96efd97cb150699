"""Ed25519 keys and signatures over canonical JSON.

Agents and the server each hold an Ed25519 key pair. Public keys travel as
base64 (raw 32 bytes); a key's fingerprint is ``SHA256:<base64 of its digest>``
in the style of OpenSSH so that people can compare it by eye.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import ConfigError, InvalidInputError


def canonical_json(obj: Any) -> bytes:
    """Return the one byte string that both sides sign and verify for ``obj``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Return the raw public key as standard base64."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(b64: str) -> Ed25519PublicKey:
    """Parse a base64 raw Ed25519 public key; raise InvalidInputError if it is not one."""
    try:
        raw = base64.b64decode(b64, validate=True)
        if len(raw) != 32:
            raise ValueError("wrong length")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError("The public key is not a base64 Ed25519 key.") from exc


def fingerprint(public_b64: str) -> str:
    """Return ``SHA256:…`` of the raw public key, the form people compare."""
    raw = base64.b64decode(public_b64)
    digest = hashlib.sha256(raw).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def sign(key: Ed25519PrivateKey, payload: Any) -> str:
    """Sign the canonical JSON of ``payload``; return the signature as base64."""
    return base64.b64encode(key.sign(canonical_json(payload))).decode("ascii")


def verify(public_b64: str, payload: Any, signature_b64: str) -> bool:
    """Return True if ``signature_b64`` is a valid signature of ``payload`` by that key."""
    try:
        pub = load_public_key(public_b64)
        pub.verify(base64.b64decode(signature_b64, validate=True), canonical_json(payload))
        return True
    except (InvalidSignature, InvalidInputError, ValueError, TypeError):
        return False


def signed_by(pinned: str | Ed25519PublicKey, payload: Any, signature_b64: str) -> bool:
    """Return True if the pinned key (base64 raw public key, or the key object) signed ``payload``."""
    return verify(pinned if isinstance(pinned, str) else public_key_b64(pinned), payload, signature_b64)


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write the key as unencrypted PKCS#8 PEM readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key; raise ConfigError if it is missing or not one."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ConfigError(f"Key file {path} does not exist.") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"Key file {path} is not a readable PEM private key.") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"Key file {path} does not hold an Ed25519 key.")
    return key


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """Return the key stored at ``path``, creating it (0600) on first use."""
    if path.exists():
        return load_private_key(path)
    key = generate_key()
    save_private_key(key, path)
    return key


def proof_payload(purpose: str, secret_field: str, secret: str, identity: dict) -> dict:
    """The payload an agent signs to prove it holds the key it registers.

    It binds the key to the one-time secret (enrollment token, pairing code or
    ticket title), so a captured signature is useless with any other request.
    """
    return {"purpose": purpose, secret_field: secret, "identity": identity}


def agent_binding_payload(agent_id: str, agent_public_key: str) -> dict:
    """The payload the server signs to bind an agent id to its key."""
    return {"purpose": "agent", "agent_id": agent_id, "public_key": agent_public_key}
