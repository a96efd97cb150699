"""`helpline share --exclude` and `--logs`: names read as people write them, unknown ones refused before
gathering, what is left out is not gathered either, and a log pattern that matches nothing is said at once."""

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


def test_log_patterns_that_match_no_file_are_named_in_order(tmp_path):
    from agent.share import unmatched_logs

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("started\n")
    (tmp_path / "home" / ".config" / "App").mkdir(parents=True)
    (tmp_path / "home" / ".config" / "App" / "sync.log").write_text("x\n")
    patterns = [str(tmp_path / "nothing" / "*.log"), str(tmp_path / "logs" / "*.log"), "~/.config/App/*.log",
                "~/.config/Other/*.log", str(tmp_path / "logs"), str(tmp_path / "**" / "app.log")]
    assert unmatched_logs(patterns, home=tmp_path / "home") == [
        str(tmp_path / "nothing" / "*.log"), "~/.config/Other/*.log", str(tmp_path / "logs")]  # a folder is no log


def test_the_command_says_which_log_pattern_matched_nothing(tmp_path, capsys):
    missing = str(tmp_path / "nowhere" / "*.log")
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["share", "--yes", "--output", str(tmp_path / "d.tar.gz"), "--logs", missing,
                       "-x", "processes,software,updates,hardware,devices,kernel,crashes,network,storage,printers",
                       "--what", "x", "--since", "y", "--tried", "z"])
    assert exited.value.code == 0
    err = capsys.readouterr().err
    assert f"note: no file matches --logs {missing}; the share goes on without it." in err
    assert (tmp_path / "d.tar.gz").is_file()
