"""Secrets at rest: password hashes, token digests and keyed digests of short codes.

High-entropy tokens (256 bits) are stored as plain SHA-256; short codes that
could be brute-forced offline (pairing codes, 40 bits) are stored as HMAC with
the server's secret key, so a stolen database alone does not reveal them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt cost: ~50 ms and 16 MiB per hash on a small server; tuned for logins, not bulk work.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1

TOKEN_PREFIX_USER = "hlu_"
TOKEN_PREFIX_AGENT = "hla_"
TOKEN_PREFIX_ENROLL = "hle_"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return "scrypt${}${}${}${}${}".format(
        _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    )


def verify_password(password: str, stored: str) -> bool:
    """Return True if ``password`` matches ``stored``; False for any malformed hash."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest_b64)
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=base64.b64decode(salt_b64), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A fixed hash to verify against when the account does not exist, so that
# timing does not tell an attacker which usernames are real.
DUMMY_PASSWORD_HASH = hash_password(secrets.token_urlsafe(16))


def new_token(prefix: str) -> str:
    """Return a new 256-bit bearer token whose prefix tells what it is for."""
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def keyed_digest(secret_key: str, value: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()


def new_secret_key() -> str:
    return secrets.token_urlsafe(48)
