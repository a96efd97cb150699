"""Commands for admins: accounts, enrollment tokens, the agent fleet and the audit log."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from agent.client import HelplineClient
from agent.local import this_pc
from cli import credentials, output
from cli.commands.engineer import JsonOpt, YesOpt, change_password, read_secret
from protocol import times
from protocol.errors import InvalidInputError
from protocol.schemas import (
    AccountCreate,
    AccountUpdate,
    AgentDecision,
    AgentPublic,
    AgentReplace,
    AgentRetire,
    AgentStatus,
    EnrollmentTokenCreate,
    EnrollmentTokenPublic,
    ProtectionState,
    Role,
    parse_input,
)
from protocol.identifiers import short_ids
from protocol.untrusted import printable

PANEL = "For admins"

account_app = typer.Typer(help="Engineer and admin accounts, and changing your own password.", no_args_is_help=True)
token_app = typer.Typer(help="Bootstrap tokens that let PCs enroll in the fleet.", no_args_is_help=True)
agent_app = typer.Typer(help="The fleet of PCs: enroll this PC; list, show, approve, refuse, replace, quarantine, "
                             "release, retire and revoke agents.",
                        no_args_is_help=True)


def read_new_password(from_stdin: bool) -> str:
    """A new account's password: from standard input, or typed twice on the terminal (refused if the two differ)."""
    password = read_secret("Password for the new account: ", from_stdin)
    if not from_stdin and read_secret("The same password again: ", False) != password:
        raise InvalidInputError("The two passwords differ.", hint="Run the command again and type the same password twice.")
    return password


def parse_duration_hours(text: str) -> float:
    """Turn ``30s``, ``90m``, ``24h``, ``1d12h``, ``7 days`` or ``2w`` into hours; raise InvalidInputError otherwise."""
    try:
        seconds = times.parse_duration(text)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise InvalidInputError(f"'{text}' is not a duration.", hint="Use a number and a unit: 90m, 24h, 7d, 2w.")
    return seconds / 3600


@account_app.command("create")
def account_create(
    username: Annotated[str, typer.Argument(metavar="USER", help="Lowercase login name, like alice.")],
    role: Annotated[Role, typer.Option("--role", help="What the account may do.")] = Role.ENGINEER,
    name: Annotated[str | None, typer.Option("--name", metavar="NAME", help="Display name shown to users.")] = None,
    email: Annotated[str | None, typer.Option("--email", metavar="EMAIL", help="Contact address of the account's owner.")] = None,
    organisation: Annotated[str | None, typer.Option("--org", metavar="NAME", help="Organisation shown to users in session requests.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create an engineer or admin account (a password of at least 12 characters, not the username).

    Example: echo "$PW" | helpline account create alice --name "Alice Martin" --org "IT Support" --password-stdin
    """
    password = read_new_password(password_stdin)
    body = parse_input(AccountCreate, username=username, password=password, role=role, display_name=name, email=email,
                       organisation=organisation)
    with credentials.connect() as client:
        account = client.create_account(body)
    if json_out:
        output.print_json(account)
        return
    output.say(f"Created {account.role.value} account [bold]{account.username}[/].")


account_app.command("password")(change_password)


@account_app.command("list")
def account_list(json_out: JsonOpt = False) -> None:
    """List accounts.

    Example: helpline account list --json
    """
    with credentials.connect() as client:
        accounts = client.accounts()
    if json_out:
        output.print_json(accounts)
        return
    output.table(None, ["Username", "Name", "Role", "Organisation", "Disabled"],
                 [(a.username, a.display_name, a.role.value, a.organisation or "—", "yes" if a.disabled else "") for a in accounts])


@account_app.command("update")
def account_update(
    username: Annotated[str, typer.Argument(metavar="USER", help="The account to change.")],
    role: Annotated[Role | None, typer.Option("--role", help="The new role.")] = None,
    disable: Annotated[bool | None, typer.Option("--disable/--enable", help="Stop (or allow again) this account's logins.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Set a new password read from standard input.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Change an account's role, disable or enable it, or reset its password.

    A password reset or --disable ends all the account's logins (enabling it again brings none back).

    Example: helpline account update alice --role admin
    """
    body: dict = {}
    if role:
        body["role"] = role.value
    if disable is not None:
        body["disabled"] = disable
    if password_stdin:
        body["password"] = read_secret("", True)
    if not body:
        raise InvalidInputError("Nothing to change.", hint="Give --role, --disable/--enable or --password-stdin.")
    changes = parse_input(AccountUpdate, **body)
    with credentials.connect() as client:
        account = client.update_account(username, changes)
    if json_out:
        output.print_json(account)
        return
    output.say(f"Updated {account.username}: {account.role.value}{', disabled' if account.disabled else ''}.")


def _token_rows(tokens: list[EnrollmentTokenPublic], now: datetime):
    for t in tokens:
        state = ("revoked" if t.revoked else "used up" if t.uses >= t.max_uses else "expired" if t.expires_at <= now
                 else "active")
        last_by = f"{printable(t.last_used_by_hostname or '?', multiline=False)} ({t.last_used_by[:8]})" if t.last_used_by else "—"
        yield (t.id, t.group, f"{t.uses}/{t.max_uses}", str(t.agents), ", ".join(t.networks) or "any",
               output.local_time(t.expires_at), output.local_time(t.last_used_at), last_by, state, t.note)


@token_app.command("create")
def token_create(
    group: Annotated[str, typer.Option("--group", "-g", metavar="GROUP", help="The fleet group enrolled PCs join.")] = "default",
    expires_in: Annotated[str, typer.Option("--expires-in", "--expires", metavar="DURATION", help="How long it is valid: 90m, 24h, 7d.")] = "24h",
    max_uses: Annotated[int, typer.Option("--max-uses", metavar="COUNT", min=1, help="How many PCs may enroll with it.")] = 1,
    network: Annotated[list[str] | None, typer.Option(
        "--network", metavar="CIDR", help="Only PCs enrolling from this network may use it, like 10.0.0.0/8 "
                                          "(repeat for several; the address the server sees, behind its trusted proxies).")] = None,
    note: Annotated[str, typer.Option("--note", metavar="TEXT", help="A reminder of what the token is for, shown in the list.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Create an enrollment token; it is shown once and stored only hashed.

    Example: helpline enroll-token create --group finance --expires 7d --max-uses 40 --network 10.20.0.0/16
    """
    body = parse_input(EnrollmentTokenCreate, group=group, expires_in_hours=parse_duration_hours(expires_in), max_uses=max_uses,
                       note=note, networks=list(network or []))
    with credentials.connect() as client:
        t = client.create_enrollment_token(body)
    if json_out:
        output.print_json(t)
        return
    where = f", from {', '.join(t.networks)}" if t.networks else ""
    output.say(f"Enrollment token {t.id} for group [bold]{t.group}[/] ({t.max_uses} uses{where}, until {output.local_time(t.expires_at)}):")
    output.say(t.token)
    output.say(f"On each PC: echo TOKEN | helpline agent enroll {output.esc(credentials.load_login().server_url)} -")


@token_app.command("list")
def token_list(json_out: JsonOpt = False) -> None:
    """List enrollment tokens with their uses (never their secret).

    Example: helpline enroll-token list
    """
    with credentials.connect() as client:
        tokens = client.enrollment_tokens()
    if json_out:
        output.print_json(tokens)
        return
    output.table(None, ["Id", "Group", "Uses", "Agents", "Networks", "Expires", "Last used", "Last used by", "State", "Note"],
                 _token_rows(tokens, datetime.now(UTC)))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id, as `helpline enroll-token list` shows it.")],
    quarantine_agents: Annotated[bool, typer.Option(
        "--quarantine-agents", help="Also quarantine the active agents it enrolled (a leaked token): their requests "
                                    "are refused until you release each with `helpline agent release ID`.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Revoke an enrollment token so no more PCs can enroll with it.

    Examples:
      helpline enroll-token revoke 7
      helpline enroll-token revoke 7 --quarantine-agents
    """
    with credentials.connect() as client:
        t = client.revoke_enrollment_token(token_id, quarantine_agents=quarantine_agents)
    if json_out:
        output.print_json(t)
        return
    output.say(f"Revoked enrollment token {token_id}.")
    if quarantine_agents:
        output.say(f"Quarantined {len(t.quarantined)} agent(s) it enrolled"
                   + (f": {', '.join(t.quarantined)}" if t.quarantined else "") + ".")


ENROLL_TOKEN_ENV = "HELPLINE_ENROLL_TOKEN"


def enroll_token(argument: str | None, token_file: Path | None) -> str:
    """The enrollment token from the argument (``-`` for standard input) or a file, else from the environment.

    Raise InvalidInputError if both the argument and a file are given, if none of
    the three is, or if the token is empty.
    """
    from_env = os.environ.get(ENROLL_TOKEN_ENV) or None
    given = [name for name, value in (("TOKEN", argument), ("--token-file", token_file)) if value is not None]
    if len(given) > 1:
        raise InvalidInputError("Give the enrollment token once.", hint="Use either TOKEN (or '-') or --token-file.")
    if argument == "-":
        token, where = sys.stdin.readline(), "standard input"
    elif argument is not None:
        token, where = argument, "TOKEN"
    elif token_file is not None:
        try:
            token, where = token_file.read_text(encoding="utf-8").partition("\n")[0], str(token_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"Cannot read the token file {output.esc(token_file)}: {getattr(exc, 'strerror', None) or exc}.",
                                    hint="Give a readable file holding the token on its first line.") from None
    elif from_env is not None:
        token, where = from_env, ENROLL_TOKEN_ENV
    else:
        raise InvalidInputError("No enrollment token.", hint=f"Pipe it in with '-', or use --token-file or {ENROLL_TOKEN_ENV}.")
    token = token.strip()
    if not token:
        raise InvalidInputError(f"The enrollment token from {where} is empty.")
    return token


@agent_app.command("enroll")
def agent_enroll(
    url: Annotated[str, typer.Argument(metavar="URL", help="The Helpline server, like https://help.example.com.")],
    token: Annotated[str | None, typer.Argument(
        metavar="TOKEN", show_default=False,
        help="An enrollment token from `helpline enroll-token create`, or '-' to read it from standard input. "
             "Other users of this PC can see command-line arguments: prefer '-', --token-file or "
             f"{ENROLL_TOKEN_ENV}.")] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file", metavar="FILE", help="Read the token from the first line of FILE.")] = None,
    server_key: Annotated[str | None, typer.Option("--server-key", metavar="FINGERPRINT", help="Refuse a server whose key has another fingerprint.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Enroll this PC in the fleet (run on the PC, usually by a deployment script).

    The token comes from TOKEN, standard input ('-'), --token-file or the HELPLINE_ENROLL_TOKEN variable.

    Example: echo "$TOKEN" | helpline agent enroll https://help.example.com - --server-key SHA256:…
    """
    pc = this_pc()
    before = pc.link()
    state = pc.enroll(url, enroll_token(token, token_file), expected_fingerprint=server_key)
    moved_from = before.group if before and before.enrolled and before.server_url == state.server_url and before.group != state.group else None
    if json_out:
        output.print_json({"agent_id": state.agent_id, "group": state.group, "server": state.server_url,
                           "server_fingerprint": state.server_fingerprint, "previous_group": moved_from,
                           "status": (AgentStatus.PENDING if state.pending else AgentStatus.ACTIVE).value})
        return
    if moved_from:
        output.say(f"This PC moved from group [bold]{output.esc(moved_from)}[/] to group [bold]{output.esc(state.group)}[/] (agent {state.agent_id}).")
    else:
        output.say(f"This PC is enrolled as agent {state.agent_id} in group [bold]{output.esc(state.group)}[/].")
    output.say(f"Server key pinned: {state.server_fingerprint}")
    if state.pending:
        output.say("It looks like a PC enrolled before, so it waits for an administrator's approval: "
                   f"helpline agent approve {state.agent_id}")


@agent_app.command("run")
def agent_run(once: Annotated[bool, typer.Option("--once", help="Run the work that is due now, then exit (for cron and tests).")] = False) -> None:
    """Run this PC's agent service: scheduled snapshots, check-in, engineers' requests. Stops on SIGTERM or Ctrl-C.

    Example: helpline agent run --once
    """
    from cli.commands.snapshots import run_service

    run_service(once=once)


def _status_cell(a: AgentPublic) -> str:
    if a.status == AgentStatus.PENDING and a.resembles:
        return f"pending, looks like {a.resembles[:8]}"
    if a.status == AgentStatus.RETIRED and a.replaced_by:
        return f"retired, replaced by {a.replaced_by[:8]}"
    if a.replaces and a.status == AgentStatus.ACTIVE:
        return f"active, replaces {a.replaces[:8]}"
    return a.status.value


def _evidence_words(evidence: str) -> str:
    return "same machine id and host name" if evidence == "same machine id and hostname" else evidence


@agent_app.command("list")
def agent_list(
    group: Annotated[str | None, typer.Option("--group", "-g", metavar="GROUP", help="Only agents of this fleet group.")] = None,
    status: Annotated[AgentStatus | None, typer.Option("--state", "--status", help="Only agents in this state.")] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Only agents waiting for an admin's approval (--state pending).")] = False,
    problem: Annotated[list[str] | None, typer.Option(
        "--problem", metavar="PROBLEM", help="Only agents with this problem: offline, not-protected, quarantined, pending, policy-behind "
                                             "(repeat for several).")] = None,
    protection: Annotated[list[ProtectionState] | None, typer.Option(
        "--protection", help="Only agents whose snapshots stand so (repeat for several).")] = None,
    not_protected: Annotated[bool, typer.Option(
        "--not-protected", help="Only agents that need a look: no recent snapshot, failing, or no recent verified "
                                "restore (every --protection but protected).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List the fleet's agents (enrolled and paired PCs) with their state, snapshot protection and problems.

    A pending agent enrolled looking like another (same machine id and
    hostname); approve it, refuse it, or make it that PC's replacement after a
    re-image with `helpline agent replace NEW --of OLD`.
    Protection is "never" (no snapshot yet), "failing" (the last run or sample
    restore failed), "stale" (no recent snapshot), "unverified" (no recent
    verified restore) or "protected"; `helpline agent show` says it in words.
    Problems: offline (not seen for the server's [fleet] offline_after_minutes),
    not protected, quarantined, pending.

    Examples:
      helpline agent list --pending
      helpline agent list --group finance --problem offline --problem not-protected
    """
    if pending and status not in (None, AgentStatus.PENDING):
        raise InvalidInputError("--pending and --state name different states.", hint="Give one of them.")
    if not_protected and protection:
        raise InvalidInputError("--not-protected and --protection both choose protection states.", hint="Give one of them.")
    wanted = [p for p in ProtectionState if p is not ProtectionState.PROTECTED] if not_protected else (protection or [])
    with credentials.connect() as client:
        agents = client.agents(group, AgentStatus.PENDING if pending else status, wanted,
                               [p.replace("-", " ") for p in problem or []])
    if json_out:
        output.print_json(agents)
        return
    short = short_ids(a.id for a in agents)
    output.table(None, ["Hostname", "Id", "State", "Group", "OS", "Agent", "Last seen", "Protection", "Last snapshot",
                        "Problems", "Tickets"],
                 [(a.hostname, short[a.id], _status_cell(a), a.group or ("—" if a.enrolled else "paired only"), a.os,
                   a.agent_version, output.local_time(a.last_seen_at), a.protection.value if a.protection else "—",
                   output.local_time(a.last_snapshot_at), ", ".join(a.problems) or "—", ", ".join(a.tickets)) for a in agents])
    for a in agents:
        if a.status == AgentStatus.PENDING and a.resembles:
            output.say(f"{short[a.id]} looks like {a.resembles} ({_evidence_words(a.evidence)}): if it is that PC "
                       f"re-imaged, `helpline agent replace {a.id} --of {a.resembles}`; else approve or refuse it.")


AgentIdArg = Annotated[str, typer.Argument(
    metavar="AGENT", help="The agent's id or its start (as `helpline agent list` shows it), or its host name.")]
ReasonOpt = Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why, kept in the audit log.")]


@agent_app.command("show")
def agent_show(agent_id: AgentIdArg, json_out: JsonOpt = False) -> None:
    """Show one agent, named by id, a unique start of its id, or host name.

    Examples:
      helpline agent show 5d0c7a3e
      helpline agent show laptop-042
    """
    with credentials.connect() as client:
        a = client.agent(agent_id)
    if json_out:
        output.print_json(a)
        return
    lines = (f"[bold]{output.esc(a.hostname)}[/] ({a.id})\nStatus: {a.status.value}\nOS: {output.esc(a.os)}\n"
             f"Agent: {output.esc(a.agent_version)}\nGroup: {a.group or '—'}\n"
             f"Key: {a.fingerprint}\nLast seen: {output.local_time(a.last_seen_at)}\nTickets: {', '.join(a.tickets) or '—'}")
    if a.resembles:
        lines += f"\nResembled at enrollment: agent {a.resembles} ({output.esc(a.evidence)})"
    if a.replaces:
        lines += f"\nReplaces: agent {a.replaces} (a re-imaged PC; its server-side snapshots stay readable here)"
    if a.replaced_by:
        lines += f"\nReplaced by: agent {a.replaced_by}"
    if a.quarantined_at:
        lines += f"\nQuarantined: {output.local_time(a.quarantined_at)} ({output.esc(a.quarantine_reason)})"
    if a.retired_at:
        lines += f"\nRetired: {output.local_time(a.retired_at)}"
    elif a.revoked_at:
        lines += f"\nRevoked: {output.local_time(a.revoked_at)}"
    if a.enrolled_by_token is not None:
        lines += f"\nEnrolled with token: {a.enrolled_by_token}"
    if a.problems:
        lines += f"\nProblems: {', '.join(a.problems)}"
    if a.protection_words:
        lines += f"\nSnapshots: {output.esc(a.protection_words)}\nLast snapshot: {output.local_time(a.last_snapshot_at)}"
    if a.current_policy_version is not None or a.policy_version is not None:
        from cli.commands.policy import policy_words

        lines += f"\nPolicy: {policy_words(a)}"
    output.say(lines)


def _decide(decide: Callable[[HelplineClient, str, AgentDecision], AgentPublic], agent_id: str, reason: str,
            json_out: bool, done: str) -> None:
    """Send an admin's decision on an agent (``decide``: a HelplineClient method) and say where the agent stands."""
    body = parse_input(AgentDecision, reason=reason)
    with credentials.connect() as client:
        a = decide(client, agent_id, body)
    if json_out:
        output.print_json(a)
        return
    output.say(f"{done} agent {a.id} ({output.esc(a.hostname)}); it is now {a.status.value}.")


@agent_app.command("approve")
def agent_approve(
    agent_id: AgentIdArg,
    replaces: Annotated[str | None, typer.Option(
        "--replaces", metavar="OLD", help="Approve it as the re-imaged PC of agent OLD (the same as "
                                          "`helpline agent replace NEW --of OLD`).")] = None,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Approve a pending agent (admins): it becomes a normal agent of its own.

    It gets nothing of the agent it resembled: that agent keeps its tickets and
    history, unless --replaces names it (a re-imaged PC).

    Examples:
      helpline agent approve 5d0c7a3e-9b1f-4c2a-8e6d-0f3a1b2c4d5e --reason "a second PC of the same model"
      helpline agent approve 9b1f4c2a --replaces 5d0c7a3e --reason "re-imaged by IT"
    """
    if replaces is not None:
        agent_replace(agent_id, replaces, reason, json_out)
        return
    _decide(HelplineClient.approve_agent, agent_id, reason, json_out, "Approved")


@agent_app.command("refuse")
def agent_refuse(agent_id: AgentIdArg, reason: ReasonOpt = "", json_out: JsonOpt = False) -> None:
    """Refuse a pending agent (admins): it is revoked and its credential stops working.

    Example: helpline agent refuse 5d0c7a3e-9b1f-4c2a-8e6d-0f3a1b2c4d5e --reason "not one of ours"
    """
    _decide(HelplineClient.refuse_agent, agent_id, reason, json_out, "Refused")


@agent_app.command("revoke")
def agent_revoke(agent_id: AgentIdArg, reason: ReasonOpt = "", json_out: JsonOpt = False) -> None:
    """Revoke an agent (admins): its credential stops working at once; its tickets and bundles stay.

    Example: helpline agent revoke 5d0c7a3e-9b1f-4c2a-8e6d-0f3a1b2c4d5e --reason "laptop stolen"
    """
    _decide(HelplineClient.revoke_agent, agent_id, reason, json_out, "Revoked")


@agent_app.command("replace")
def agent_replace(
    agent_id: Annotated[str, typer.Argument(metavar="NEW", help="The new agent (usually pending), as `helpline agent list --pending` shows it.")],
    old: Annotated[str, typer.Option("--of", metavar="OLD", help="The agent of the PC before it was re-imaged.")],
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Make a re-imaged PC's new agent the replacement of its old one (admins).

    The new agent takes over the old one's ticket links and may restore the
    old one's server-side snapshots; the old agent is retired (its credential
    ends). Nothing happens on its own: a PC that enrolls looking like another
    waits as pending until you decide.

    Example: helpline agent replace 9b1f4c2a --of 5d0c7a3e --reason "re-imaged by IT"
    """
    body = parse_input(AgentReplace, replaces=old, reason=reason)
    with credentials.connect() as client:
        a = client.replace_agent(agent_id, body)
    if json_out:
        output.print_json(a)
        return
    output.say(f"Agent {a.id} ({output.esc(a.hostname)}) replaces agent {a.replaces}: it has its tickets "
               f"({', '.join(a.tickets) or 'none'}) and may restore its server-side snapshots; agent {a.replaces} is retired.")


@agent_app.command("retire")
def agent_retire(
    agent_id: AgentIdArg,
    delete_data: Annotated[bool, typer.Option(
        "--delete-data", help="Also delete its server-side snapshots and escrowed password now (otherwise retention "
                              "removes them). Ticket data stays with the tickets.")] = False,
    yes: YesOpt = False,
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Retire (decommission) a PC's agent (admins): its credential ends and its key never enrolls again.

    Asks first on a terminal; --yes for scripts.

    Examples:
      helpline agent retire laptop-042 --reason "sold"
      helpline agent retire 5d0c7a3e --delete-data --yes
    """
    with credentials.connect() as client:
        if not yes:
            if not (sys.stdin.isatty() and sys.stderr.isatty()):
                raise InvalidInputError("Retiring an agent needs a confirmation and there is no terminal to ask.",
                                        hint=f"Add --yes: helpline agent retire {printable(agent_id, multiline=False)} --yes")
            a = client.agent(agent_id)
            what = ("its server-side snapshots and escrowed password are DELETED now" if delete_data
                    else "its server-side data is kept until retention removes it")
            question = printable(f"Retire agent {a.id} ({a.hostname})? Its credential ends, and {what}.", multiline=False)
            if not typer.confirm(question, default=False, err=True):
                output.say(f"Nothing was changed; agent {a.id} stays {a.status.value}.")
                return
            agent_id = a.id
        a = client.retire_agent(agent_id, parse_input(AgentRetire, reason=reason, delete_data=delete_data))
    if json_out:
        output.print_json(a)
        return
    output.say(f"Retired agent {a.id} ({output.esc(a.hostname)})"
               + ("; its server-side snapshots are deleted." if delete_data else "; its data is kept by retention."))


@agent_app.command("quarantine")
def agent_quarantine(agent_id: AgentIdArg, reason: ReasonOpt = "", json_out: JsonOpt = False) -> None:
    """Quarantine an agent (admins): every request of its key is refused until you release or retire it.

    Example: helpline agent quarantine 5d0c7a3e --reason "disk image leaked"
    """
    _decide(HelplineClient.quarantine_agent, agent_id, reason, json_out, "Quarantined")


@agent_app.command("release")
def agent_release(agent_id: AgentIdArg, reason: ReasonOpt = "", json_out: JsonOpt = False) -> None:
    """Release a quarantined agent (admins) once one PC alone holds its key (re-enroll or retire the other copy).

    Example: helpline agent release 5d0c7a3e --reason "clone wiped"
    """
    _decide(HelplineClient.release_agent, agent_id, reason, json_out, "Released")


def audit(
    action: Annotated[str | None, typer.Option("--action", metavar="PREFIX", help="Only actions starting with this, e.g. ticket. or auth.login")] = None,
    target: Annotated[str | None, typer.Option("--target", metavar="ID", help="Only events about this target id, e.g. T-1042.")] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="COUNT", min=1, max=5000, help="Show at most this many events.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Show the audit log, newest first.

    Example: helpline audit --action auth.login --limit 20
    """
    with credentials.connect() as client:
        events = client.audit_events(action=action, target=target, limit=limit)
    if json_out:
        output.print_json(events)
        return
    output.table(None, ["When", "Actor", "Action", "Target", "Details", "From"],
                 [(output.local_time(e.at), e.actor, e.action, e.target, audit_details(e.details), e.ip or "") for e in events])


def audit_details(details: dict, *, width: int = 80) -> str:
    """What an audit event changed, in one short line: ``status new → open, assignee alice``."""
    parts = []
    details = dict(details)
    for old_key, new_key in (("old", "new"), ("from", "to")):
        if old_key in details and new_key in details:
            old, new = details.pop(old_key, None), details.pop(new_key, None)
            parts.append(f"{old if old not in (None, '') else '—'} → {new if new not in (None, '') else '—'}")
    for key, value in details.items():
        if isinstance(value, str) and len(value) > 20 and all(c in "0123456789abcdef-" for c in value):
            value = value[:12] + "…"  # digests and ids: the start is enough to tell them apart
        name = str(key).replace("_", " ")
        if isinstance(value, dict) and set(value) <= {"from", "to", "old", "new"} and value:
            old, new = value.get("from", value.get("old")), value.get("to", value.get("new"))
            parts.append(f"{name} {old if old not in (None, '') else '—'} → {new if new not in (None, '') else '—'}")
        elif isinstance(value, list | tuple):
            parts.append(f"{name} {', '.join(map(str, value)) or '—'}")
        elif isinstance(value, bool):
            parts.append(name if value else f"not {name}")
        elif value is None or value == "":
            continue
        else:
            parts.append(f"{name} {value}")
    line = "; ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"
