"""This PC's group policy: fetched signed from the server at check-in, checked, kept, and read where it applies.

The agent service checks in (``POST /v1/agent/policy``) at every pass of its
loop and before it decides on an engineer's request that could run
unattended, saying which version it runs. When the server answers with
another version, the statement must be signed by the server key this PC
pinned, name this PC, and not be older than the one it runs (no downgrade,
protocol.policy.verify_policy); its snapshot settings must also make a valid
snapshot policy with this PC's own configuration. Then it is kept in
``group-policy.json`` (0600) in the agent folder and the next check-in reports
its version. Every read checks the kept statement's signature again: a file
edited on disk counts as no policy at all (this PC's own configuration, and
every request waits for its user).

Which wins: for each key the group policy sets, the group policy; for each key
it leaves out, this PC's agent.toml, then the built-in defaults.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.paths import agent_dir, write_private
from protocol.errors import ConfigError, HelplineError, InvalidInputError

if TYPE_CHECKING:  # the policy models load when a policy is kept or checked, not for a PC that has none
    from protocol.policy import PolicyBody, PolicyCheckIn, PolicyStatement, SignedPolicy
    from agent.client import HelplineClient

log = logging.getLogger("helpline.agent.policy")

POLICY_FILE = "group-policy.json"


class GroupPolicy:
    """The group policy kept in the agent folder ``directory`` (default: this PC's)."""

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory is not None else agent_dir()
        self.path = self.directory / POLICY_FILE

    def _pinned(self) -> tuple[str, str] | None:
        from agent.store import AgentStore

        try:
            state = AgentStore(self.directory).load()
        except ConfigError:
            return None
        return (state.agent_id, state.server_public_key) if state is not None else None

    def held(self) -> PolicyStatement | None:
        """The statement this PC runs, checked again; None when there is none or it does not check out."""
        if not self.path.exists():
            return None
        from protocol.policy import SignedPolicy, verify_policy

        try:
            signed = SignedPolicy.model_validate(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("the kept group policy %s is unreadable (%s): running without it", self.path, exc)
            return None
        pinned = self._pinned()
        if pinned is None:
            return None
        try:
            return verify_policy(signed, pinned_server_key=pinned[1], agent_id=pinned[0])
        except HelplineError as exc:
            log.warning("the kept group policy does not check out (%s): running without it", exc.message)
            return None

    def body(self) -> PolicyBody | None:
        held = self.held()
        return held.policy() if held is not None else None

    def accept(self, signed: SignedPolicy) -> PolicyStatement:
        """Check ``signed`` against the pinned key and the policy this PC runs, then keep it; return it.

        AuthError for a forged statement or a downgrade, ForbiddenError for one
        naming another PC, InvalidInputError for one that does not fit this PC.
        """
        from protocol.policy import verify_policy

        pinned = self._pinned()
        if pinned is None:
            raise ConfigError("This PC is not linked to a Helpline server: it takes no group policy.")
        statement = verify_policy(signed, pinned_server_key=pinned[1], agent_id=pinned[0], running=self.held())
        rules = statement.policy().snapshots
        if rules is not None:
            from agent.snapshots.policy import load_policy

            try:  # the group's settings over this PC's own must still make a policy the agent can run
                load_policy(data_dir=self.directory, group_section=rules.section())
            except ConfigError as exc:
                raise InvalidInputError(f"Policy version {statement.version} of group {statement.group} does not "
                                        f"fit this PC: {exc.message}") from None
        write_private(self.path, json.dumps(signed.model_dump(mode="json")).encode())
        return statement

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)

    def check_in(self, client: HelplineClient) -> tuple[PolicyStatement | None, bool]:
        """Tell the server which version this PC runs; take a newer one it offers. Return (the policy run, changed).

        A statement refused here is logged and the policy run stays as it was;
        the server keeps showing this PC's group policy as behind.
        """
        from protocol.policy import PolicyCheckIn

        held = self.held()
        answer = client.agent_policy(PolicyCheckIn(running=held.version if held is not None else None))
        if answer.current_version is None:
            if held is not None:  # the server's signed answer: this PC's group has no policy (any more)
                self.drop()
                return None, True
            return None, False
        if answer.policy is None:
            return held, False
        try:
            statement = self.accept(answer.policy)
        except HelplineError as exc:
            log.warning("refused a group policy from the server: %s", exc.message)
            return held, False
        client.agent_policy(PolicyCheckIn(running=statement.version))  # report the version now run
        return statement, True


def snapshot_section(directory: Path | None = None) -> dict[str, Any]:
    """The ``[snapshots]`` keys this PC's group policy sets (empty: none)."""
    body = GroupPolicy(directory).body()
    return body.snapshots.section() if body is not None and body.snapshots is not None else {}
