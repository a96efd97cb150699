"""`helpline --help` reads like a CLI's help: every option explained, domain metavars, no Python types."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cli import main as cli_main
from protocol.errors import ExitStatus

ROOT = Path(__file__).resolve().parents[2]
METAVAR = re.compile(r"^[A-Z][A-Z_]*$")


def walk(command, path=()):
    """Yield (words after `helpline`, command) for every command and group under ``command``."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, (*path, name))


def commands():
    return [(" ".join(path), command) for path, command in walk(typer.main.get_command(cli_main.app)) if not hasattr(command, "commands")]


def groups():
    return [" ".join(path) for path, command in walk(typer.main.get_command(cli_main.app)) if hasattr(command, "commands")]


def parameters():
    for name, command in commands():
        for param in command.params:
            if param.name != "help":
                yield name, param


def run(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli_main.main(argv)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_the_walk_sees_the_whole_tree():
    names = {name for name, _ in commands()}
    assert {"share", "ticket list", "agent enroll", "server run", "completion"} <= names
    assert {"", "ticket", "diag", "server"} <= set(groups())


def test_every_option_and_argument_has_help():
    missing = [f"helpline {name}: {param.opts or param.name}" for name, param in parameters() if not (param.help or "").strip()]
    assert not missing, "options and arguments without help:\n" + "\n".join(missing)


def test_every_value_has_a_domain_metavar_or_its_choices():
    """A value shows as CODE, TICKET, URL… (uppercase) or as its choices; a flag shows nothing."""
    wrong = []
    for name, param in parameters():
        if getattr(param, "is_flag", False):
            if param.metavar is not None:
                wrong.append(f"helpline {name} {param.opts}: a flag with metavar {param.metavar!r}")
        elif param.type.name == "choice" and param.param_type_name == "option":
            if param.metavar is not None:  # the choices say more than any name
                wrong.append(f"helpline {name} {param.opts}: choices hidden behind {param.metavar!r}")
        elif not (param.metavar and METAVAR.match(param.metavar)):
            wrong.append(f"helpline {name} {param.opts or param.name}: metavar {param.metavar!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", [name for name, _ in commands()])
def test_help_shows_no_python_types(capsys, name):
    status, out, _ = run(capsys, [*name.split(), "--help"])
    assert status == ExitStatus.OK
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert not re.search(r"[{}]|\b[a-z_]+\b(?=\s|$)", usage.split("[OPTIONS]", 1)[-1]), usage  # arguments in CAPITALS
    for python_type in ("<str>", "<bool>", "<int", "<float", "<path>", "list[", "TEXT RANGE", "<"):
        assert python_type not in out.replace("<=", ""), f"{python_type!r} in helpline {name} --help"


@pytest.mark.parametrize("name", [name for name, _ in commands()])
def test_every_command_shows_an_example(name):
    command = dict(commands())[name]
    assert "Example" in (command.help or ""), f"helpline {name} has no example in its docstring"


@pytest.mark.parametrize("group", groups(), ids=lambda group: " ".join(["helpline", *group.split()]))
def test_a_bare_group_prints_its_usage(capsys, group):
    status, out, err = run(capsys, group.split())
    assert status == ExitStatus.USAGE
    assert f"Usage: {' '.join(['helpline', *group.split()])} [OPTIONS] COMMAND [ARGS]..." in out
    assert err == ""


def test_epilog_lists_every_exit_status(capsys):
    status, out, _ = run(capsys, ["--help"])
    assert status == ExitStatus.OK
    text = " ".join(out.replace("│", " ").split())
    for exit_status in ExitStatus:
        assert f"{exit_status.value} {exit_status.description}" in text


def test_readme_lists_the_same_exit_statuses():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    codes = [int(match) for match in re.findall(r"^\|\s*(\d+)\s*\|", section, flags=re.M)]
    assert codes == [int(status) for status in ExitStatus]


def test_completion_prints_a_bash_script(capsys):
    status, out, _ = run(capsys, ["completion", "bash"])
    assert status == ExitStatus.OK
    assert "complete -o default -F _helpline_completion helpline" in out
    assert f"{cli_main.COMPLETE_VAR}=complete_bash" in out


@pytest.mark.parametrize("shell", ["zsh", "fish", "powershell"])
def test_completion_prints_a_script_for_other_shells(capsys, shell):
    status, out, _ = run(capsys, ["completion", shell])
    assert status == ExitStatus.OK and "helpline" in out and f"complete_{shell}" in out


def test_completion_refuses_an_unknown_shell(capsys):
    status, _, err = run(capsys, ["completion", "tcsh"])
    assert status == ExitStatus.USAGE and err.startswith("error: ")


def test_bash_completes_commands_and_choices_with_the_printed_script(tmp_path):
    """The script really drives completion in bash: `helpline tic<Tab>` and `--status <Tab>`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "helpline"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'from cli.main import main; main()' \"$@\"\n")
    launcher.chmod(0o755)
    probe = (
        'source <(helpline completion bash)\n'
        'COMP_WORDS=(helpline tic); COMP_CWORD=1; _helpline_completion helpline; echo "${COMPREPLY[*]}"\n'
        'COMP_WORDS=(helpline ticket list --status ""); COMP_CWORD=4; _helpline_completion helpline; echo "${COMPREPLY[*]}"\n'
    )
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ticket", "new open waiting resolved closed"]
