"""The `helpline` command: one app, commands grouped by who uses them.

Every error ends here as one line and a hint, with the exit status from
protocol.errors.ExitStatus; a traceback only with --debug.
"""

from __future__ import annotations

import sys
import traceback

import typer

from cli import output
from cli.commands import admin, diag, engineer, server, share, user
from protocol.errors import ExitStatus, HelplineError

EPILOG = (
    "Exit statuses: 0 ok · 1 unexpected error · 2 usage · 3 configuration / not logged in · 4 authentication · "
    "5 forbidden · 6 not found · 7 conflict · 8 rate limited · 9 server unreachable · 10 invalid input · "
    "11 partly done · 130 interrupted."
)

app = typer.Typer(
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


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show a traceback when something fails."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
) -> None:
    output.DEBUG["enabled"] = debug


share.register(app)
app.command(rich_help_panel=user.PANEL)(user.pair)
app.command(rich_help_panel=user.PANEL)(user.request)
app.command(rich_help_panel=user.PANEL)(user.status)

app.command(rich_help_panel=engineer.PANEL)(engineer.login)
app.command(rich_help_panel=engineer.PANEL)(engineer.logout)
app.command(rich_help_panel=engineer.PANEL)(engineer.whoami)
app.add_typer(engineer.ticket_app, name="ticket", rich_help_panel=engineer.PANEL)
app.add_typer(diag.diag_app, name="diag", rich_help_panel=engineer.PANEL)
app.add_typer(engineer.ssh_key_app, name="ssh-key", rich_help_panel=engineer.PANEL)

app.add_typer(admin.account_app, name="account", rich_help_panel=admin.PANEL)
app.add_typer(admin.token_app, name="enroll-token", rich_help_panel=admin.PANEL)
app.add_typer(admin.agent_app, name="agent", rich_help_panel=admin.PANEL)
app.command(rich_help_panel=admin.PANEL)(admin.audit)
app.add_typer(server.server_app, name="server", rich_help_panel=admin.PANEL)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return (and exit with) its status."""
    command = typer.main.get_command(app)
    status = ExitStatus.OK
    try:
        # Without standalone mode, click returns the status of an Exit or an interrupt instead of exiting.
        returned = command.main(args=argv, prog_name="helpline", standalone_mode=False)
        if isinstance(returned, int) and returned:
            status = returned
            if returned == ExitStatus.INTERRUPTED:
                output.error("Stopped.")
    except HelplineError as exc:
        if output.DEBUG["enabled"]:
            traceback.print_exc()
        output.error(exc.message, exc.hint)
        status = exc.status
    except typer.Exit as exc:
        status = exc.exit_code
    except typer.Abort:
        output.error("Stopped.")
        status = ExitStatus.INTERRUPTED
    except typer.TyperException as exc:  # click's usage and parameter errors (exit code 2)
        message = exc.format_message()
        if message:  # empty when click has just printed the help of a bare group
            output.error(message, "Run the command with --help for its usage.")
        status = ExitStatus.USAGE if getattr(exc, "exit_code", 1) == 2 else ExitStatus.ERROR
    except KeyboardInterrupt:
        output.error("Stopped.")
        status = ExitStatus.INTERRUPTED
    except Exception as exc:  # the last net: one line, and the traceback on request
        if output.DEBUG["enabled"]:
            traceback.print_exc()
        output.error(f"Unexpected error: {exc.__class__.__name__}: {exc}", "Run again with --debug and report the output.")
        status = ExitStatus.ERROR
    sys.exit(int(status))
