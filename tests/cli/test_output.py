"""Text from a PC or the server reaches the engineer's terminal only as printable characters;
JSON output stays the exact data."""

from __future__ import annotations

import json
import re

import pytest

from cli import output

HOSTILE = ("\x1b[2J\x1b[H\x1b[31mURGENT\x1b[0m \x1b]0;window title\x07 \x9b2J \x07"
           "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\ invoice\u202efdp.exe \x00\r\x7f")
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


@pytest.fixture(autouse=True)
def terminal(monkeypatch):
    """Pretend stdout is a colour terminal, where escapes would act."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)


def without_our_styles(text: str) -> str:
    """Drop the SGR sequences rich writes for our own [bold] markup; what is left must be plain."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_table_cells_are_made_printable(capsys):
    output.table(None, ["Ticket", "Title"], [("T-1", HOSTILE)])
    out = without_our_styles(capsys.readouterr().out)
    assert not RAW_CONTROL.search(out), repr(out)
    assert "\\x1b[2J" in out and "\\x9b2J" in out and "\\u202e" in out


def test_escaped_values_and_whole_messages_are_made_printable(capsys):
    output.say(f"[bold]T-1[/] {output.esc(HOSTILE)}")
    output.say(f"not escaped by the caller: {HOSTILE}")
    out = without_our_styles(capsys.readouterr().out)
    assert not RAW_CONTROL.search(out), repr(out)
    assert "window title" in out and "click" in out  # shown, not acted on


def test_errors_are_one_printable_line(capsys):
    output.error(f"the server refused {HOSTILE}\nfake: line", hint=f"try {HOSTILE}")
    err = without_our_styles(capsys.readouterr().err)
    assert not RAW_CONTROL.search(err), repr(err)
    assert err.count("\n") == 2  # the message and the hint, one line each


def test_json_output_keeps_the_exact_data(capsys):
    data = {"title": HOSTILE + " \ud800 пк-бухгалтерия \U0001f468\u200d\U0001f4bb"}
    output.print_json(data)
    out = capsys.readouterr().out
    assert not RAW_CONTROL.search(out)  # escaped as \\uXXXX inside the JSON strings
    assert "пк-бухгалтерия" in out  # readable text stays readable
    assert json.loads(out) == data


def test_hyperlink_markup_that_slipped_in_unescaped_makes_no_link(capsys):
    output.say("Assignee: [red link=https://evil.example/]Alice[/] and [link=file:///etc]here[/link], [bold]T-1[/]")
    out = capsys.readouterr().out
    assert "\x1b]8" not in out and "evil.example" not in out
    assert without_our_styles(out) == "Assignee: Alice and here, T-1\n"
    assert "\x1b[1m" in out  # our own styles still apply


def test_sizes_read_the_same_in_tables_and_the_timeline():
    from cli import output
    from protocol.units import human_size

    for n, text in ((812, "812 B"), (43_700, "43.7 KB"), (1_400_000, "1.4 MB"), (2_100_000_000, "2.1 GB")):
        assert human_size(n) == output.size(n) == text
