"""Reading snapshots with the escrowed password: a real restic 0.14 repository decrypted, and future-dated
snapshots refused when uploaded through the REST backend (in-process)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

from server.restic_rest import inspect

PASSWORD = "tangerine-lighthouse-4471"


@dataclass(frozen=True)
class RealRepository:
    """A repository restic itself made: its folder, password, and the one snapshot restic wrote."""

    path: Path
    password: str
    snapshot_id: str
    snapshot_time: datetime

    def files(self, kind: str) -> list[Path]:
        return sorted((self.path / kind).iterdir())


@pytest.fixture(scope="module")
def real_repository(tmp_path_factory) -> RealRepository:
    """``restic init`` and ``backup`` of a small tree (restic 0.14: a version 2 repository, compressed metadata)."""
    base = tmp_path_factory.mktemp("restic")
    (base / "data").mkdir()
    (base / "data" / "notes.txt").write_text("the quarterly figures\n")
    (base / "password").write_text(PASSWORD)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(base), "RESTIC_CACHE_DIR": str(base / "cache")}
    restic = ["restic", "--repo", str(base / "repo"), "--password-file", str(base / "password"), "--no-cache"]
    subprocess.run([*restic, "init"], check=True, capture_output=True, env=env, timeout=120)
    subprocess.run([*restic, "backup", "--host", "pc-1", str(base / "data")], check=True, capture_output=True,
                   env=env, timeout=120)
    listed = subprocess.run([*restic, "snapshots", "--json"], check=True, capture_output=True, env=env, timeout=120)
    [snapshot] = json.loads(listed.stdout)
    return RealRepository(base / "repo", PASSWORD, snapshot["id"], datetime.fromisoformat(snapshot["time"]))


def forge(key: inspect.MasterKey, document: dict, *, compressed: bool = True) -> bytes:
    """A snapshot file as restic writes one, encrypted with ``key`` (what a hostile PC holding the key can make)."""
    plain = json.dumps(document).encode()
    if compressed:
        plain = b"\x02" + zstandard.ZstdCompressor().compress(plain)
    iv = secrets.token_bytes(16)
    encryptor = Cipher(algorithms.AES(key.encrypt), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    pad = Cipher(algorithms.AES(key.mac_k), modes.ECB()).encryptor().update(iv)
    return iv + ciphertext + Poly1305.generate_tag(key.mac_r + pad, ciphertext)


def snapshot_document(when: datetime) -> dict:
    return {"time": when.isoformat().replace("+00:00", "Z"), "tree": "a" * 64, "paths": ["/home/ada"],
            "hostname": "pc-1", "username": "ada"}


# --- the format, against what restic wrote ----------------------------------------------------------


def test_a_real_snapshot_opens_with_the_repository_password_and_tells_its_time(real_repository):
    [key_file] = real_repository.files("keys")
    key = inspect.open_key_file(real_repository.password, key_file.read_bytes())
    [snapshot] = real_repository.files("snapshots")
    assert snapshot.name == real_repository.snapshot_id
    assert inspect.snapshot_time(key, snapshot.read_bytes()) == real_repository.snapshot_time
    assert inspect.unpack(inspect.decrypt(key, snapshot.read_bytes()))[:1] == b"{"
    config = inspect.unpack(inspect.decrypt(key, (real_repository.path / "config").read_bytes()))
    assert json.loads(config)["version"] == 2


def test_a_wrong_password_or_a_changed_byte_opens_nothing(real_repository):
    [key_file] = real_repository.files("keys")
    with pytest.raises(inspect.Unreadable):
        inspect.open_key_file("not-the-password", key_file.read_bytes())
    key = inspect.open_key_file(real_repository.password, key_file.read_bytes())
    data = bytearray(real_repository.files("snapshots")[0].read_bytes())
    data[20] ^= 1
    with pytest.raises(inspect.WrongKey):
        inspect.snapshot_time(key, bytes(data))


@pytest.mark.parametrize(("costs", "why"), [
    ({"N": 1 << 30, "r": 8, "p": 1}, "memory"), ({"N": 32768, "r": 8, "p": 4096}, "work"),
    ({"N": 1000, "r": 8, "p": 1}, "not a power of two"), ({"N": "32768", "r": 8, "p": 1}, "not a number"),
], ids=["memory", "work", "power-of-two", "number"])
def test_a_key_file_asking_for_absurd_scrypt_costs_is_refused_before_any_work(real_repository, costs, why):
    [key_file] = real_repository.files("keys")
    document = {**json.loads(key_file.read_bytes()), **costs}
    with pytest.raises(inspect.Unreadable, match="scrypt"):
        inspect.open_key_file(real_repository.password, json.dumps(document).encode())


def test_a_compression_bomb_is_not_inflated(real_repository):
    [key_file] = real_repository.files("keys")
    key = inspect.open_key_file(real_repository.password, key_file.read_bytes())
    bomb = b"\x02" + zstandard.ZstdCompressor().compress(b"{" + b" " * (inspect.MAX_SNAPSHOT_BYTES + 10))
    iv = bytes(16)
    encryptor = Cipher(algorithms.AES(key.encrypt), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(bomb) + encryptor.finalize()
    pad = Cipher(algorithms.AES(key.mac_k), modes.ECB()).encryptor().update(iv)
    with pytest.raises(inspect.Unreadable, match="over"):
        inspect.snapshot_time(key, iv + ciphertext + Poly1305.generate_tag(key.mac_r + pad, ciphertext))


# --- uploads through the REST backend ------------------------------------------------------------------


@dataclass
class Repo:
    """restic's side of a repository credential: requests under the repository's path with HTTP Basic."""

    helpline: object
    url: str

    def put(self, kind: str, data: bytes) -> object:
        parts = urlsplit(self.url)
        auth = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
        return self.helpline.http.request("POST", f"{parts.path}{kind}/{hashlib.sha256(data).hexdigest()}",
                                          content=data, headers={"Authorization": f"Basic {auth}"})


def pc_repository(helpline, real_repository, *, escrowed: str | None = PASSWORD):
    """An enrolled PC whose server repository holds the real repository's config and key file; escrowed if asked.

    The server's clock is set just after restic made the real snapshot.
    """
    helpline.clock.now = real_repository.snapshot_time + timedelta(minutes=1)
    pc = helpline.enrolled_pc()
    url = helpline.ok("POST", "agent/snapshots/credential", pc, json={"purpose": "backup"})["url"]
    repo = Repo(helpline, url)
    config = (real_repository.path / "config").read_bytes()
    parts = urlsplit(url)
    auth = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    created = helpline.http.request("POST", f"{parts.path}?create=true", headers={"Authorization": f"Basic {auth}"})
    assert created.status_code == 200, created.text
    assert helpline.http.request("POST", f"{parts.path}config", content=config,
                                 headers={"Authorization": f"Basic {auth}"}).status_code == 200
    [key_file] = real_repository.files("keys")
    assert repo.put("keys", key_file.read_bytes()).status_code == 200
    if escrowed is not None:
        helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": escrowed})
    key = inspect.open_key_file(real_repository.password, key_file.read_bytes())
    return pc, repo, key


def test_a_real_snapshot_is_stored_and_a_forged_future_one_refused_and_audited(helpline, clock, real_repository):
    pc, repo, key = pc_repository(helpline, real_repository)
    assert repo.put("snapshots", real_repository.files("snapshots")[0].read_bytes()).status_code == 200
    assert repo.put("snapshots", forge(key, snapshot_document(clock() + timedelta(minutes=9)))).status_code == 200
    future = forge(key, snapshot_document(clock() + timedelta(days=400)))
    refused = repo.put("snapshots", future)
    assert refused.status_code == 403 and "ahead of the server's clock" in refused.text
    assert repo.put("snapshots", future).status_code == 403  # restic tries again: refused again, audited once
    [event] = helpline.audit("snapshot.upload_refused")
    assert event.actor_id == pc.agent_id and event.details["reason"] == "dated in the future"
    assert event.details["snapshot"] == hashlib.sha256(future).hexdigest()
    plain = forge(key, snapshot_document(clock() + timedelta(days=400)), compressed=False)  # repository version 1
    assert repo.put("snapshots", plain).status_code == 403


def test_a_snapshot_the_escrowed_password_cannot_open_is_refused(helpline, clock, real_repository):
    pc, repo, key = pc_repository(helpline, real_repository, escrowed="a-password-that-opens-nothing")
    refused = repo.put("snapshots", real_repository.files("snapshots")[0].read_bytes())
    assert refused.status_code == 403 and "does not open with the repository password" in refused.text
    helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": PASSWORD})  # the PC escrows the right one
    assert repo.put("snapshots", real_repository.files("snapshots")[0].read_bytes()).status_code == 200


def test_a_snapshot_in_another_key_it_added_is_still_read(helpline, clock, real_repository):
    """A PC that adds a key file of its own (new master key) and escrows its password is read with that key."""
    pc, repo, _ = pc_repository(helpline, real_repository)
    [key_file] = real_repository.files("keys")
    document = json.loads(key_file.read_bytes())
    own = inspect.MasterKey(secrets.token_bytes(32), secrets.token_bytes(16), secrets.token_bytes(16))
    other_password = "my-own-second-key"
    salt = secrets.token_bytes(64)
    derived = hashlib.scrypt(other_password.encode(), salt=salt, n=1024, r=8, p=1, dklen=64)
    wrapped = forge(inspect.MasterKey(derived[:32], derived[32:48], derived[48:]),
                    {"mac": {"k": base64.b64encode(own.mac_k).decode(), "r": base64.b64encode(own.mac_r).decode()},
                     "encrypt": base64.b64encode(own.encrypt).decode()}, compressed=False)
    added = {**document, "N": 1024, "r": 8, "p": 1, "salt": base64.b64encode(salt).decode(),
             "data": base64.b64encode(wrapped).decode()}
    assert repo.put("keys", json.dumps(added).encode()).status_code == 200
    helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": other_password})
    assert repo.put("snapshots", forge(own, snapshot_document(clock() + timedelta(days=30)))).status_code == 403
    assert repo.put("snapshots", forge(own, snapshot_document(clock()))).status_code == 200


def test_without_escrow_the_server_cannot_read_and_accepts(helpline, clock, real_repository):
    _, repo, key = pc_repository(helpline, real_repository, escrowed=None)
    assert repo.put("snapshots", forge(key, snapshot_document(clock() + timedelta(days=400)))).status_code == 200
    assert helpline.audit("snapshot.upload_refused") == []
