"""An engineer's SSH public keys through the API."""

from __future__ import annotations

import base64
from datetime import datetime

from cryptography.hazmat.primitives import serialization

from protocol import signing


def openssh_line(comment: str) -> str:
    key = signing.generate_key().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " " + comment


def test_keys_are_added_once_listed_and_removed_by_their_owner(helpline, clock):
    dana, sam = helpline.token(), helpline.token()
    line = openssh_line("dana@laptop")
    added = helpline.ok("POST", "me/ssh-keys", dana, json={"public_key": line})
    assert (added["algorithm"], added["comment"]) == ("ssh-ed25519", "dana@laptop")
    assert added["fingerprint"].startswith("SHA256:") and datetime.fromisoformat(added["created_at"]) == clock()
    again = helpline.call("POST", "me/ssh-keys", dana, json={"public_key": line})
    assert again.status_code == 409 and added["fingerprint"] in again.json()["error"]["message"]
    assert [k["id"] for k in helpline.ok("GET", "me/ssh-keys", dana)] == [added["id"]]
    assert helpline.ok("GET", "me/ssh-keys", sam) == []

    assert helpline.call("DELETE", f"me/ssh-keys/{added['id']}", sam).status_code == 404
    assert helpline.ok("DELETE", f"me/ssh-keys/{added['id']}", dana) == {"status": "removed"}
    assert helpline.ok("GET", "me/ssh-keys", dana) == []
    assert [e.details["fingerprint"] for e in helpline.audit("ssh_key.remove")] == [added["fingerprint"]]


def test_a_mangled_key_is_refused(helpline):
    engineer = helpline.token()
    kind, data, _ = openssh_line("x").split(" ")
    wrong_type = "ssh-rsa " + data
    damaged = f"{kind} {data[:-4]}!!!!"
    not_a_key = "ssh-dss " + base64.b64encode(b"x" * 40).decode()
    for text, message in ((wrong_type, "does not match"), (damaged, "damaged"), (not_a_key, "not an OpenSSH public key")):
        response = helpline.call("POST", "me/ssh-keys", engineer, json={"public_key": text})
        assert response.status_code == 422 and message in response.json()["error"]["message"], text
