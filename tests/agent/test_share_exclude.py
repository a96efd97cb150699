"""`helpline share --exclude`: names read as people write them, unknown ones refused before gathering, and
what is left out is not gathered either."""

from __future__ import annotations

import pytest

from agent import share
from agent.share import ShareRequest, collect_options, exclusions
from cli import main as cli_main
from protocol.errors import InvalidInputError


@pytest.mark.parametrize("values, expected", [
    (["Logs"], {"logs"}),
    (["logs,Network"], {"logs", "network"}),
    ([" processes  software ", "CRASHES"], {"processes", "software", "crashes"}),
    (["logs,", ",,"], {"logs"}),
    ([], set()),
])
def test_names_in_any_case_and_several_in_one_value(values, expected):
    assert exclusions(values) == expected


@pytest.mark.parametrize("values", [["nosuch"], ["logs,nosuch"], ["log"]])
def test_an_unknown_name_is_refused_with_the_choices(values):
    with pytest.raises(InvalidInputError, match="Nothing to leave out is called") as refused:
        exclusions(values)
    assert "processes" in refused.value.hint and "logs" in refused.value.hint


def test_what_is_left_out_is_not_gathered(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPLINE_CONFIG_DIR", str(tmp_path / "config"))
    options = collect_options(ShareRequest(exclude={"processes", "logs"}))
    assert {"processes", "logs"} <= set(options.exclude)


def test_the_command_refuses_an_unknown_name_before_it_gathers(tmp_path, monkeypatch, capsys):
    def gathered(*args, **kwargs):
        raise AssertionError("gathered before refusing")

    monkeypatch.setattr(share, "prepare", gathered)
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["share", "--yes", "--output", str(tmp_path / "d.tar.gz"), "-x", "Logs,spooler",
                       "--what", "x", "--since", "y", "--tried", "z"])
    assert exited.value.code == 10
    assert capsys.readouterr().err.splitlines()[0] == "error: Nothing to leave out is called spooler."
