"""Untrusted names become one safe path component inside the chosen folder, and untrusted
text reaches a terminal only as printable characters."""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.errors import InvalidInputError
from protocol.untrusted import DEFAULT_MAX_BYTES, contained, printable, safe_component

WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|conin\$|conout\$|clock\$|com[0-9]|lpt[0-9])$", re.IGNORECASE)

# Pieces of hostile names: separators, traversal, drives, controls, bidi, look-alikes, devices.
HOSTILE_PIECES = [
    "/", "\\", "..", ".", "...", "C:", "c:\\", "\\\\?\\", "//server/share", "~", "-", "--", " ", "\t",
    "\0", "\n", "\r", "\x1b[2J", "\x9b", "\x7f", "\u202e", "\u2066", "\u200b", "\ufeff", "\u2028",
    "\ud800", "\uff0f", "\uff0e\uff0e", "\u2215", "\u2044", "%2e%2e%2f", "CON", "nul", "Com1", "LPT9",
    "COM\u00b9", "conin$", "пк-бухгалтерия", "home", "eng", ".vim", "pack", "x" * 70, "é" * 40, "🙂",
]
hostile_names = st.one_of(
    st.text(),
    st.text(min_size=200, max_size=1200),
    st.lists(st.sampled_from(HOSTILE_PIECES), max_size=12).map("".join),
    st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=5)), max_size=8).map("".join),
)

# Characters that must never reach a terminal raw: C0 (less newline and tab), DEL, C1,
# format characters (bidi overrides, zero-width) other than the joiners, separators, surrogates.
JOINERS = {"\u200c", "\u200d"}


def terminal_controls(text: str, *, multiline: bool = True) -> list[str]:
    found = []
    for ch in text:
        if multiline and ch in "\n\t":
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs", "Zl", "Zp") or (category == "Cf" and ch not in JOINERS):
            found.append(ch)
    return found


def assert_one_safe_component(name: str) -> None:
    assert name
    assert PurePosixPath(name).parts == (name,) and PureWindowsPath(name).parts == (name,)
    assert not PureWindowsPath(name).drive and not PureWindowsPath(name).root
    for forbidden in "/\\:\0<>\"|?*":
        assert forbidden not in name
    assert name not in (".", "..") and ".." not in name
    assert not name.startswith((".", "-", "~")) and not name.endswith((".", " "))
    assert not WINDOWS_DEVICES.match(name.split(".")[0])
    assert len(name.encode("utf-8")) <= DEFAULT_MAX_BYTES
    assert not any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in name)  # no controls, odd spaces


# -- safe_component ---------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(hostile_names)
@example("/../../home/eng/.vim/pack/x/start/owned")
@example("..")
@example("....")
@example("C:\\Windows\\System32")
@example("\\\\?\\C:\\x")
@example("a\0b\n\u202egpj.exe")
@example("x" * 5000)
@example("\U0001f642" * 200)
def test_any_name_becomes_one_safe_component(name):
    result = safe_component(name, fallback="pc")
    assert_one_safe_component(result)
    assert safe_component(result, fallback="pc") == result  # already safe: left alone


@settings(max_examples=150, deadline=None)
@given(hostile_names)
def test_a_safe_component_stays_inside_the_parent_on_disk(name):
    component = safe_component(name, fallback="pc")
    with tempfile.TemporaryDirectory() as tmp:
        parent = Path(tmp) / "engineer"
        parent.mkdir()
        target = contained(parent, component)
        assert target.parent == parent.resolve()
        target.mkdir()
        (target / "report.html").write_text("x")
        assert os.listdir(parent) == [component]  # exactly one new entry, under that name
        assert os.listdir(tmp) == ["engineer"]


@pytest.mark.parametrize("name, expected", [
    ("пк-бухгалтерия", "пк-бухгалтерия"),
    ("T-1042-reception-pc-20261202-101500", "T-1042-reception-pc-20261202-101500"),
    ("/../../home/eng/.vim/pack/x/start/owned", "home_eng_.vim_pack_x_start_owned"),
    ("..", "pc"),
    ("...", "pc"),
    ("", "pc"),
    ("\0\n\x1b", "pc"),
    ("CON", "CON_"),
    ("nul.tar.gz", "nul_.tar.gz"),
    ("COM\u00b9", "COM1_"),
    ("-rf --no-preserve-root", "rf_--no-preserve-root"),
    ("name. . .", "name._._"),
    ("name...", "name_"),
    ("name.", "name"),
    ("\uff0fetc\uff0fpasswd", "etc_passwd"),
])
def test_examples(name, expected):
    assert safe_component(name, fallback="pc") == expected


def test_length_is_cut_in_bytes_on_a_character_boundary():
    cut = safe_component("ж" * 300, fallback="pc", max_bytes=61)
    assert cut == "ж" * 30


def test_an_unsafe_fallback_is_a_programming_error():
    with pytest.raises(ValueError):
        safe_component("..", fallback="../x")
    with pytest.raises(ValueError):
        safe_component("x", fallback="pc", max_bytes=4)


# -- contained --------------------------------------------------------------------------


@pytest.mark.parametrize("child", ["../x", "a/../../x", "/etc/passwd", ".", "", "a/../b"])
def test_contained_refuses_what_leaves_or_is_the_parent(tmp_path, child):
    with pytest.raises(InvalidInputError):
        contained(tmp_path, child)


def test_contained_accepts_a_place_inside_and_returns_it_resolved(tmp_path):
    assert contained(tmp_path, "a/b") == tmp_path.resolve() / "a" / "b"
    assert contained(tmp_path, tmp_path / "c") == tmp_path.resolve() / "c"


def test_contained_refuses_a_pre_existing_link_at_or_on_the_way_to_the_destination(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    parent = tmp_path / "engineer"
    parent.mkdir()
    (parent / "T-1-pc").symlink_to(outside)
    with pytest.raises(InvalidInputError, match="is a link"):
        contained(parent, "T-1-pc")
    with pytest.raises(InvalidInputError, match="is a link"):
        contained(parent, "T-1-pc/report.html")
    (parent / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidInputError, match="is a link"):
        contained(parent, "dangling")
    assert not (tmp_path / "nowhere").exists()


# -- printable ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(HOSTILE_PIECES + ["\x07", "\x1b]0;pwned\x07", "\x1b]8;;http://x\x1b\\"]),
                                      max_size=10).map("".join)))
def test_printable_leaves_no_terminal_control(text):
    shown = printable(text)
    assert terminal_controls(shown) == []
    assert terminal_controls(printable(text, multiline=False), multiline=False) == []
    assert printable(shown) == shown
    shown.encode("utf-8")  # no lone surrogate left to crash the writer


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))))
def test_printable_leaves_ordinary_text_alone(text):
    assert printable(text) == text


@pytest.mark.parametrize("text, expected", [
    ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
    ("\x9b2J", "\\x9b2J"),
    ("\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\", "\\x1b]8;;http://evil\\x1b\\click\\x1b]8;;\\x1b\\"),
    ("invoice\u202efdp.exe", "invoice\\u202efdp.exe"),
    ("a\rb", "a\\x0db"),
    ("line one\nline\ttwo", "line one\nline\ttwo"),
    ("пк-бухгалтерия \U0001f468\u200d\U0001f4bb", "пк-бухгалтерия \U0001f468\u200d\U0001f4bb"),
    ("\U000e0041", "\\U000e0041"),
])
def test_printable_examples(text, expected):
    assert printable(text) == expected


def test_printable_single_line():
    assert printable("a\nb\tc", multiline=False) == "a\\nb\\tc"
