"""`helpline policy set|show|list`: per-group policies, set by admins and delivered signed to the group's PCs."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated

import typer

from cli import credentials, output
from cli.commands.admin import PANEL as PANEL  # noqa: PLC0414 - the panel these commands show in
from cli.commands.engineer import JsonOpt
from protocol.errors import InvalidInputError
from protocol.policy import PolicyPublic, read_policy
from protocol.schemas import AgentPublic

policy_app = typer.Typer(
    help="Per-group policies, delivered signed to the group's PCs.",
    no_args_is_help=True)

_MAX_FILE = 256 * 1024


def read_policy_file(path: Path):
    """The policy in ``path`` (TOML, or JSON when it ends in .json or starts with '{'), checked."""
    try:
        raw = path.read_bytes()[: _MAX_FILE + 1]
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {path}: {exc.strerror}.", hint="Give the path of a TOML or JSON file.") from None
    if len(raw) > _MAX_FILE:
        raise InvalidInputError(f"{path} is over {_MAX_FILE // 1024} KiB; a policy is a short file.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not UTF-8 text.") from None
    try:
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: "
                                f"{str(exc).splitlines()[0][:200]}") from None
    return read_policy(data, source=f"The policy in {path.name}")


def _parts(body: dict) -> str:
    words = []
    if body.get("snapshots"):
        words.append("snapshots (" + ", ".join(sorted(body["snapshots"])) + ")")
    if body.get("escrow") is not None:
        words.append("escrow " + ("on" if body["escrow"] else "off"))
    if body.get("collectors"):
        words.append("collectors")
    if (body.get("consent") or {}).get("wait_minutes"):
        words.append(f"consent waits {body['consent']['wait_minutes']} min")
    words.append("unattended: " + (", ".join(body.get("unattended") or []) or "nothing"))
    return "; ".join(words)


def policy_words(agent: AgentPublic) -> str:
    """Which version of its group's policy a PC runs, in words (``agent show``)."""
    runs, current = agent.policy_version, agent.current_policy_version
    if current is None:
        return "its group has no policy"
    if runs is None:
        return f"none yet; its group's is version {current} (policy behind)"
    if runs < current:
        return f"version {runs}; its group's is version {current} (policy behind)"
    return f"version {runs} (current)"


def _show(policy: PolicyPublic) -> None:
    output.say(f"Group [bold]{output.esc(policy.group)}[/]: policy version {policy.version}, set by "
               f"{output.esc(policy.created_by)} {output.local_time(policy.created_at)}.")
    output.say(f"PCs running it: {policy.agents_current}; behind: {policy.agents_behind}.")
    output.say(f"Sets: {output.esc(_parts(policy.body))}")
    output.say(output.esc(json.dumps(policy.body, indent=2, sort_keys=True)))


@policy_app.command("set")
def policy_set(
    group: Annotated[str, typer.Argument(metavar="GROUP", help="The group of PCs the policy is for, like laptops.")],
    file: Annotated[Path, typer.Option("--file", "-f", metavar="FILE", help="The policy as TOML or JSON.")],
    json_out: JsonOpt = False,
) -> None:
    """Set a group's policy (admins): it becomes the group's next version and reaches its PCs at their next check-in.

    A policy sets only what it names; the rest stays as each PC's agent.toml says.
    unattended may name "restore" and "diagnostics" only: a shell or session always needs the user.

    Example: helpline policy set laptops --file laptops.toml
    """
    body = read_policy_file(file)
    with credentials.connect() as client:
        policy = client.set_policy(group, body)
    if json_out:
        output.print_json(policy)
        return
    output.say(f"Group [bold]{output.esc(policy.group)}[/] now has policy version {policy.version}; "
               f"its PCs take it at their next check-in.")


@policy_app.command("show")
def policy_show(
    group: Annotated[str, typer.Argument(metavar="GROUP", help="The group, like laptops.")],
    version: Annotated[int | None, typer.Option("--version", metavar="N", min=1,
                                                 help="An earlier version instead of the current one.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a group's current policy (or one version of it) and how many of its PCs run it.

    Example: helpline policy show laptops --version 2
    """
    with credentials.connect() as client:
        policy = client.policy(group, version)
    if json_out:
        output.print_json(policy)
        return
    _show(policy)


@policy_app.command("list")
def policy_list(json_out: JsonOpt = False) -> None:
    """List the groups that have a policy, with their current version and how many PCs are behind.

    Example: helpline policy list --json
    """
    with credentials.connect() as client:
        policies = client.policies()
    if json_out:
        output.print_json(policies)
        return
    output.table(None, ["Group", "Version", "Set", "By", "Running it", "Behind", "Sets"],
                 [(p.group, p.version, output.local_time(p.created_at), p.created_by, p.agents_current,
                   p.agents_behind, _parts(p.body)) for p in policies])
