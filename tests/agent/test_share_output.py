"""`helpline share --output`: where the bundle goes, checked before gathering; saved whole or not at all;
never over a file that was there unless asked (--overwrite)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from agent import share
from agent.share import OUTPUT_NAME, output_target, save_archive
from cli import main as cli_main
from protocol.errors import InvalidInputError

NOW = datetime(2026, 12, 3, 9, 30, 5)


def archive(tmp_path: Path, data: bytes = b"bundle bytes") -> Path:
    path = tmp_path / "work" / "bundle.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_new_file_is_the_target_and_its_folders_are_made_when_saved(tmp_path):
    target = output_target(str(tmp_path / "a" / "b" / "diag.tar.gz"))
    assert target == tmp_path / "a" / "b" / "diag.tar.gz" and not target.parent.exists(), "nothing made before saving"
    save_archive(archive(tmp_path), target)
    assert target.read_bytes() == b"bundle bytes"
    assert os.listdir(target.parent) == ["diag.tar.gz"], "no part file is left beside it"


@pytest.mark.parametrize("spelling", ["{folder}", "{folder}/", "{folder}/./"])
def test_a_folder_gets_a_new_file_named_after_the_moment(tmp_path, spelling):
    folder = tmp_path / "usb"
    folder.mkdir()
    target = output_target(spelling.format(folder=folder), now=NOW)
    assert target == folder / OUTPUT_NAME.format(moment="20261203-093005")
    target.write_bytes(b"first")
    assert output_target(str(folder), now=NOW).name == OUTPUT_NAME.format(moment="20261203-093005-2")


def test_a_path_ending_in_a_separator_is_a_folder_even_before_it_exists(tmp_path):
    target = output_target(f"{tmp_path}/new folder/", now=NOW)
    assert target.parent == tmp_path / "new folder" and target.name.startswith("helpline-diagnostics-")


def test_a_home_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert output_target("~/diag.tar.gz") == tmp_path / "diag.tar.gz"


def test_an_existing_file_is_kept_unless_overwrite_is_given(tmp_path):
    kept = tmp_path / "report.odt"
    kept.write_bytes(b"the user's own file")
    with pytest.raises(InvalidInputError, match="already exists") as refused:
        output_target(str(kept))
    assert "--overwrite" in refused.value.hint
    assert kept.read_bytes() == b"the user's own file"
    assert output_target(str(kept), overwrite=True) == kept
    save_archive(archive(tmp_path), kept, overwrite=True)
    assert kept.read_bytes() == b"bundle bytes"


def test_a_file_that_appears_while_gathering_is_not_replaced(tmp_path):
    target = output_target(str(tmp_path / "diag.tar.gz"))
    target.write_bytes(b"written meanwhile")
    with pytest.raises(InvalidInputError, match="already exists"):
        save_archive(archive(tmp_path), target)
    assert target.read_bytes() == b"written meanwhile"
    assert sorted(os.listdir(tmp_path)) == ["diag.tar.gz", "work"], "no part file is left"


def test_a_file_system_without_hard_links_still_never_replaces(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(share.os, "link", no_links)
    target = tmp_path / "diag.tar.gz"
    save_archive(archive(tmp_path), target)
    assert target.read_bytes() == b"bundle bytes"
    with pytest.raises(InvalidInputError, match="already exists"):
        save_archive(archive(tmp_path, b"second"), target)
    assert target.read_bytes() == b"bundle bytes"


@pytest.mark.parametrize("make", ["symlink", "fifo"])
def test_anything_but_a_regular_file_is_refused_even_with_overwrite(tmp_path, make):
    odd = tmp_path / "odd"
    if make == "symlink":
        (tmp_path / "real").write_text("kept")
        odd.symlink_to(tmp_path / "real")
    else:
        os.mkfifo(odd)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        output_target(str(odd), overwrite=True)


def test_a_file_on_the_way_is_refused_before_gathering(tmp_path):
    (tmp_path / "notes.txt").write_text("kept")
    with pytest.raises(InvalidInputError, match="notes.txt is not a folder"):
        output_target(str(tmp_path / "notes.txt" / "diag.tar.gz"))


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_name_is_refused(name):
    with pytest.raises(InvalidInputError, match="needs a file or folder name"):
        output_target(name)


def test_a_file_system_error_when_saving_is_one_line_and_leaves_no_part_file(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(share.shutil, "move", full)
    with pytest.raises(InvalidInputError, match="Could not save the bundle to .*: No space left on device"):
        save_archive(archive(tmp_path), tmp_path / "diag.tar.gz")
    assert not (tmp_path / "diag.tar.gz").exists()


def test_the_command_refuses_an_existing_file_before_it_gathers(tmp_path, monkeypatch, capsys):
    kept = tmp_path / "diag.tar.gz"
    kept.write_bytes(b"kept")

    def gathered(*args, **kwargs):
        raise AssertionError("gathered before refusing")

    monkeypatch.setattr(share, "prepare", gathered)
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["share", "--yes", "--output", str(kept), "--what", "x", "--since", "y", "--tried", "z"])
    err = capsys.readouterr().err
    assert exited.value.code == 10 and err.splitlines()[0] == f"error: {kept} already exists."
    assert kept.read_bytes() == b"kept"


@pytest.mark.parametrize("sending", [["--code", "7KQ2-M9XD"], ["--ticket", "T-1042"], ["--new"], ["--preview"]])
def test_output_with_an_option_it_cannot_go_with_is_refused_before_anything_happens(tmp_path, monkeypatch, capsys, sending):
    def gathered(*args, **kwargs):
        raise AssertionError("gathered before refusing")

    monkeypatch.setattr(share, "prepare", gathered)
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["share", "--yes", "--output", str(tmp_path / "d.tar.gz"), *sending])
    err = capsys.readouterr().err
    assert exited.value.code == 10 and err.startswith(("error: --output keeps the bundle on this PC",
                                                       "error: --preview stops before the bundle is saved"))
