"""The `helpline` command: one app, commands grouped by who uses them.

Every error ends here as one line and a hint, with the exit status from
protocol.errors.ExitStatus; a traceback only with --debug.
"""

from __future__ import annotations

import gc
import os
import sys


def _command_word(argv: list[str]) -> str | None:
    """The command named on the line: the first word after the root options (which all are flags)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _started_as_share() -> bool:
    """Whether this process is `helpline share` (the installed command, not an import of this module)."""
    program = os.path.splitext(os.path.basename(sys.argv[0]))[0] if sys.argv and sys.argv[0] else ""
    return program == "helpline" and not os.environ.get(COMPLETE_VAR) and _command_word(sys.argv[1:]) == "share"


# The variable a completion script sets when the shell asks `helpline` for completions.
COMPLETE_VAR = "_HELPLINE_COMPLETE"
# Helpline's models use no pydantic plugin: without this, the first model a command builds looks through every
# installed package's entry points for one (0.01-0.02 s of a command's start). Set it to "" to load plugins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
# httpx loads its own command-line client (rich's syntax highlighting, pygments, click) when it is imported, and
# falls back to a placeholder when that import fails; Helpline never runs that client, so the import is refused
# (about 0.01 s of every command that reaches a server).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
if _started_as_share() and not {"--help", "-h", "--send-queued"} & set(sys.argv[1:]):
    # The share gathers in a process of its own (agent.gathering): started now, before the rest of the command
    # loads, it loads the gathering's code (and takes the first CPU reading) while this one loads the CLI.
    from agent.gathering import spawn_early

    spawn_early()
if _started_as_share():
    gc.disable()  # as main() does for a share (see there), from the first import on

import traceback  # noqa: E402 - after the share's gathering process started
from collections.abc import Callable  # noqa: E402
from enum import Enum  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402
from typer._click.exceptions import ClickException  # noqa: E402 - typer 0.26 exports no public base for click's errors

from agent.process_end import end_process as _end_process  # noqa: E402
from cli import answers, output  # noqa: E402
from protocol.errors import Audience, ExitStatus, HelplineError  # noqa: E402


def exit_status_epilog() -> str:
    """The end of `helpline --help`: every exit status with its meaning, one a line, from protocol.errors.ExitStatus."""
    # typer prints each paragraph of an epilog as one line.
    return "\n\n".join(["Exit statuses:", *(f"{status.value:<4}{status.description}" for status in ExitStatus)])


EPILOG = exit_status_epilog()

_APP_SETTINGS = dict(
    name="helpline",
    help="Helpline: get expert help for this PC, and give it.\n\n"
    "Users: `helpline pair CODE` or `helpline request \"what is wrong\"`, then `helpline status`.\n\n"
    "Engineers: `helpline login URL`, then `helpline ticket …`.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from agent import __version__

        output.say(f"helpline {__version__}")
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show a traceback when something fails."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
) -> None:
    output.DEBUG["enabled"] = debug
    if ctx.invoked_subcommand not in (None, "requests", "completion") and not ctx.resilient_parsing:
        from cli.commands import consent

        waiting = consent.notice()  # an engineer's request waits for this PC's user: say so, on stderr
        if waiting:
            output.err_console().print(f"[bold]note:[/] {output.esc(waiting)}")


def _typer_app() -> typer.Typer:
    """The root app with its options and no commands yet."""
    root = typer.Typer(**_APP_SETTINGS)
    root.callback()(_root)
    return root


class Shell(str, Enum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"
    POWERSHELL = "powershell"


def _register_completion_classes() -> None:
    """Teach the parser typer's completion protocol, which the scripts `helpline completion` prints speak."""
    from typer.completion import completion_init

    completion_init()


def completion(shell: Annotated[Shell, typer.Argument(metavar="SHELL", help="The shell to complete in: bash, zsh, fish or powershell.")]) -> None:
    """Print the script that makes your shell complete helpline's commands, options and choices.

    Load it in your shell's start-up file:
      bash (~/.bashrc): eval "$(helpline completion bash)"
      zsh (~/.zshrc): eval "$(helpline completion zsh)"
      fish: helpline completion fish > ~/.config/fish/completions/helpline.fish

    Example: helpline completion bash > ~/.local/share/bash-completion/completions/helpline
    """
    from typer.completion import get_completion_script

    _register_completion_classes()
    sys.stdout.write(get_completion_script(prog_name="helpline", complete_var=COMPLETE_VAR, shell=shell.value) + "\n")


def _share(app: typer.Typer) -> None:
    from cli.commands import share

    share.register(app)


def _user(app: typer.Typer) -> None:
    from cli.commands import user

    for command in (user.pair, user.request, user.status, user.reply):
        app.command(rich_help_panel=user.PANEL)(command)


def _session(app: typer.Typer) -> None:
    from cli.commands import session

    session.register(app)


def _snapshots(app: typer.Typer) -> None:
    from cli.commands import snapshots, user

    app.add_typer(snapshots.snapshot_app, name="snapshot", rich_help_panel=user.PANEL)
    app.command(rich_help_panel=user.PANEL)(snapshots.restore)


def _consent(app: typer.Typer) -> None:
    from cli.commands import consent, user

    app.command(rich_help_panel=user.PANEL)(consent.requests)


def _engineer(app: typer.Typer) -> None:
    from cli.commands import engineer

    for command in (engineer.login, engineer.logout, engineer.whoami):
        app.command(rich_help_panel=engineer.PANEL)(command)
    app.add_typer(engineer.ticket_app, name="ticket", rich_help_panel=engineer.PANEL)


def _diag(app: typer.Typer) -> None:
    from cli.commands import diag, engineer

    app.add_typer(diag.diag_app, name="diag", rich_help_panel=engineer.PANEL)


def _pc(app: typer.Typer) -> None:
    from cli.commands import engineer, pc

    app.add_typer(pc.pc_app, name="pc", rich_help_panel=engineer.PANEL)


def _engineer_keys(app: typer.Typer) -> None:
    from cli.commands import engineer

    app.add_typer(engineer.ssh_key_app, name="ssh-key", rich_help_panel=engineer.PANEL)
    app.add_typer(engineer.api_token_app, name="token", rich_help_panel=engineer.PANEL)


def _connect(app: typer.Typer) -> None:
    from cli.commands import connect

    connect.register(app)


def _admin_groups(app: typer.Typer) -> None:
    from cli.commands import admin

    app.add_typer(admin.account_app, name="account", rich_help_panel=admin.PANEL)
    app.add_typer(admin.token_app, name="enroll-token", rich_help_panel=admin.PANEL)
    app.add_typer(admin.agent_app, name="agent", rich_help_panel=admin.PANEL)


def _policy(app: typer.Typer) -> None:
    from cli.commands import admin, policy

    app.add_typer(policy.policy_app, name="policy", rich_help_panel=admin.PANEL)


def _audit(app: typer.Typer) -> None:
    from cli.commands import admin

    app.command(rich_help_panel=admin.PANEL)(admin.audit)


def _server(app: typer.Typer) -> None:
    from cli.commands import admin, server

    app.add_typer(server.server_app, name="server", rich_help_panel=admin.PANEL)


def _webhook(app: typer.Typer) -> None:
    from cli.commands import admin, webhook

    app.add_typer(webhook.webhook_app, name="webhook", rich_help_panel=admin.PANEL)


def _completion(app: typer.Typer) -> None:
    app.command(rich_help_panel="Set-up")(completion)


# Every top-level command word, and the part of the app that adds it, in the order `helpline --help` lists
# them (grouped in panels by who runs them). A command loads only its own part's code (`_app_for`): the
# commands people wait on — share, restore, relay as ssh's ProxyCommand — start without the others' imports.
_PARTS: tuple[tuple[tuple[str, ...], Callable[[typer.Typer], None]], ...] = (
    (("share",), _share),
    (("pair", "request", "status", "reply"), _user),
    (("session",), _session),
    (("snapshot", "restore"), _snapshots),
    (("requests",), _consent),
    (("login", "logout", "whoami", "ticket"), _engineer),
    (("diag",), _diag),
    (("pc",), _pc),
    (("ssh-key", "token"), _engineer_keys),
    (("connect", "relay", "sessions", "chat", "recording"), _connect),
    (("account", "enroll-token", "agent"), _admin_groups),
    (("policy",), _policy),
    (("audit",), _audit),
    (("server",), _server),
    (("webhook",), _webhook),
    (("completion",), _completion),
)


def _full_app() -> typer.Typer:
    """Every command, grouped in panels by who runs them."""
    app = _typer_app()
    for _words, add in _PARTS:
        add(app)
    return app


def _app_for(word: str | None) -> typer.Typer:
    """The app that runs the command ``word``: the root with that command's part alone when ``word`` names one
    (parsed, helped and run exactly as in the full app), else the full app (the root's help, a mistyped word)."""
    for words, add in _PARTS:
        if word in words:
            app = _typer_app()
            add(app)
            return app
    return _app()


_APPS: dict[str, typer.Typer] = {}


def _app() -> typer.Typer:
    """The full app, built once."""
    if "full" not in _APPS:
        _APPS["full"] = _full_app()
    return _APPS["full"]


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # `cli.main.app`: the full app, built on first use
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _user_commands() -> frozenset[str]:
    """The commands the person at the PC runs (the "For users" panel): their errors' hints speak to that person."""
    from cli.commands import user

    app = _app()
    names = {c.name or typer.main.get_command_name(c.callback.__name__) for c in app.registered_commands
             if c.rich_help_panel == user.PANEL and (c.name or c.callback)}
    names |= {g.name for g in app.registered_groups if g.rich_help_panel == user.PANEL and g.name}
    return frozenset(names)


def reader(argv: list[str]) -> Audience:
    """Who reads this command's messages: the PC's user for user commands, else the logged-in role (engineer by default)."""
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] in _user_commands():
        return Audience.USER
    from cli.credentials import load_login

    try:
        role = load_login().role
    except HelplineError:
        return Audience.ENGINEER
    return Audience.ADMIN if role == Audience.ADMIN.value else Audience.ENGINEER


def _interrupted(message: str = "Stopped.", hint: str | None = None) -> None:
    """Say that the command was stopped, on a line of its own (a prompt may have the cursor)."""
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    output.error(message, hint)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return (and exit with) its status."""
    completing = bool(os.environ.get(COMPLETE_VAR))
    if completing:  # the shell asks for completions; the parser answers and exits
        _register_completion_classes()
    words = sys.argv[1:] if argv is None else argv
    # `helpline share` is the one command a user at a broken PC waits for: it loads only its own code.
    sharing = not completing and _command_word(words) == "share"
    if sharing:
        # Loading, collecting and redacting make few reference cycles; the cycle collector would mostly walk the
        # loaded modules' objects again and again (its first full pass after the bundle took 0.015 s). It stays
        # off until the process ends, unless a remote session follows the share (`share` turns it on then).
        gc.disable()
    # A restore and a snapshot are timed against restic alone: their processes end without the teardown too.
    quick_end = not completing and argv is None and _command_word(words) in _QUICK_END
    status = ExitStatus.OK
    answers.install()  # a Ctrl-C at any question stops the command (see cli.answers)
    try:
        command = typer.main.get_command(_app() if completing else _app_for(_command_word(words)))
        # Without standalone mode, click returns the status of an Exit or an interrupt instead of exiting.
        returned = command.main(args=argv, prog_name="helpline", standalone_mode=False)
        if isinstance(returned, int) and returned:
            status = returned
            if returned == ExitStatus.INTERRUPTED:
                _interrupted()
    except HelplineError as exc:
        if output.DEBUG["enabled"]:
            traceback.print_exc()
        if exc.status == ExitStatus.INTERRUPTED:
            _interrupted(exc.message, exc.hint)
        else:
            output.error(exc.message, exc.hint_for(reader(sys.argv[1:] if argv is None else argv)))
        status = exc.status
    except typer.Exit as exc:
        status = exc.exit_code
    except typer.Abort:
        _interrupted()
        status = ExitStatus.INTERRUPTED
    except ClickException as exc:  # click's usage and parameter errors (exit code 2)
        message = exc.format_message()
        if message:  # empty when click has just printed the help of a bare group
            output.error(message, "Run the command with --help for its usage.")
        status = ExitStatus.USAGE if getattr(exc, "exit_code", 1) == 2 else ExitStatus.ERROR
    except KeyboardInterrupt:
        _interrupted()
        status = ExitStatus.INTERRUPTED
    except Exception as exc:  # the last net: one line, and the traceback on request
        if output.DEBUG["enabled"]:
            traceback.print_exc()
        output.error(f"Unexpected error: {exc.__class__.__name__}: {exc}", "Run again with --debug and report the output.")
        status = ExitStatus.ERROR
    finally:
        ending = (sharing and argv is None and "--session" not in words) or quick_end
        if sharing and not ending:
            gc.enable()  # the caller goes on (share may have stopped before it could)
    if ending:
        _end_process(int(status))
    sys.exit(int(status))


#: Commands whose installed process ends through :func:`_end_process` (share too, unless a session follows it).
_QUICK_END = frozenset({"restore", "snapshot"})
