"""A repository's password file: generated once, private to its owner, never replaced."""

from __future__ import annotations

import os
import stat

import pytest

from agent.snapshots.restic.password import PASSWORD_BYTES, ensure_password_file, password_path
from protocol.errors import ConfigError, InvalidInputError

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")


def test_a_password_is_generated_once_into_a_private_file(tmp_path):
    folder = tmp_path / "restic"
    path = ensure_password_file(folder, "local")
    assert path == folder / "local.password"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= (PASSWORD_BYTES * 4) // 3 and "\n" not in password
    assert ensure_password_file(folder, "local").read_text().strip() == password  # never replaced
    other = ensure_password_file(folder, "server").read_text().strip()
    assert other != password  # one password per repository
    assert sorted(p.name for p in folder.iterdir()) == ["local.password", "server.password"]  # no leftovers


def test_a_password_file_open_to_others_or_empty_is_refused(tmp_path):
    path = ensure_password_file(tmp_path / "restic", "local")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="can be read by others"):
        ensure_password_file(tmp_path / "restic", "local")
    os.chmod(path, 0o600)
    path.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        ensure_password_file(tmp_path / "restic", "local")


def test_an_existing_folder_open_to_others_is_refused_not_changed(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with pytest.raises(ConfigError, match="open to others"):
        ensure_password_file(shared, "local")
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755
    assert list(shared.iterdir()) == []


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x.tmp", "a b"])
def test_repository_names_are_plain(tmp_path, name):
    with pytest.raises(InvalidInputError):
        password_path(tmp_path, name)
