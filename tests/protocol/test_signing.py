"""Ed25519 keys, fingerprints and signatures over canonical JSON."""

from __future__ import annotations

import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import signing
from protocol.errors import ConfigError, InvalidInputError


def test_sign_and_verify_round_trip():
    key = signing.generate_key()
    pub = signing.public_key_b64(key)
    payload = {"b": 1, "a": ["x", "ü"]}
    sig = signing.sign(key, payload)
    assert signing.verify(pub, {"a": ["x", "ü"], "b": 1}, sig)  # key order does not matter
    assert not signing.verify(pub, {"a": ["x", "u"], "b": 1}, sig)
    other = signing.public_key_b64(signing.generate_key())
    assert not signing.verify(other, payload, sig)
    assert not signing.verify(pub, payload, "not base64!")
    assert not signing.verify("AAAA", payload, sig)


def test_fingerprint_of_a_known_key():
    # RFC 8032, test 1: the public key, and the SHA-256 of its 32 raw bytes in unpadded base64.
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    pub = signing.public_key_b64(private)
    assert pub == "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    assert signing.fingerprint(pub) == "SHA256:If4x36FUomFia/hUBG/SJxt77UtqvkWqWId+9H+XIbk"


def test_key_file_is_private_and_reloads(tmp_path):
    path = tmp_path / "keys" / "agent.pem"
    key = signing.load_or_create_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.public_key_b64(signing.load_or_create_private_key(path)) == signing.public_key_b64(key)


def test_bad_key_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        signing.load_private_key(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(ConfigError):
        signing.load_private_key(junk)


def test_public_key_parsing_refuses_junk():
    with pytest.raises(InvalidInputError):
        signing.load_public_key("c2hvcnQ=")
