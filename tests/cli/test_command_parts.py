"""Each command runs from the part of the app that adds it: the table of words is the app, word for word.

A command loads only its own part's code, so the table must name every word its
part adds, and nothing else; a command run alone must parse, help and fail as
it does in the full app.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


def names(app: typer.Typer) -> set[str]:
    return set(typer.main.get_command(app).commands)


@pytest.mark.parametrize("words", [words for words, _ in cli_main._PARTS], ids=lambda words: words[0])
def test_a_part_adds_exactly_the_words_the_table_names(words):
    app = cli_main._app_for(words[0])
    assert names(app) == set(words)


def test_the_parts_together_are_the_full_app_and_no_word_is_in_two():
    words = [word for words, _ in cli_main._PARTS for word in words]
    assert len(words) == len(set(words))
    assert names(cli_main._app()) == set(words)


@pytest.mark.parametrize("word", [None, "--help", "restor", "snapshots"])
def test_no_word_or_an_unknown_one_gets_the_full_app(word):
    assert cli_main._app_for(word) is cli_main._app()


@pytest.mark.parametrize("argv", [["restore", "--help"], ["snapshot", "list", "--help"], ["relay", "--help"]])
def test_a_command_alone_helps_as_in_the_full_app(argv):
    alone = typer.main.get_command(cli_main._app_for(argv[0]))
    full = typer.main.get_command(cli_main._app())
    assert alone.commands[argv[0]].get_help(typer.Context(alone)) == full.commands[argv[0]].get_help(typer.Context(full))


def test_restore_runs_without_the_other_commands_code():
    probe = ("import sys\n"
             "from cli import main\n"
             "try:\n    main.main(['restore', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('cli.commands.')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "COLUMNS": "100", "NO_COLOR": "1"})
    loaded = done.stdout.strip().splitlines()[-1]
    assert "cli.commands.snapshots" in loaded
    for other in ("admin", "server", "webhook", "connect", "engineer", "share"):
        assert f"cli.commands.{other}'" not in loaded


def test_a_mistyped_word_is_told_apart_from_the_commands(capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["restor"])
    assert exited.value.code == 2
    assert "restor" in capsys.readouterr().err


def test_a_command_never_looks_through_the_installed_packages_for_pydantic_plugins():
    probe = ("from cli import main\n"
             "from protocol.snapshots import SnapshotReport\n"
             "SnapshotReport.model_rebuild()\n"
             "from pydantic.plugin import _loader\n"
             "print(_loader._plugins is None)")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
    assert done.stdout.strip() == "True", done.stderr
