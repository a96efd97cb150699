"""What the agent remembers between runs: its key, credential and the pinned server key."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.paths import agent_dir, write_private
from protocol import signing
from protocol.schemas import AgentCredential
from protocol.errors import ConfigError, HelplineError

KEY_FILE = "agent-key.pem"
STATE_FILE = "agent.json"


@dataclass
class AgentState:
    server_url: str
    agent_id: str
    credential: str
    server_public_key: str
    enrolled: bool = False
    group: str | None = None
    tickets: list[str] = field(default_factory=list)

    @property
    def server_fingerprint(self) -> str:
        return signing.fingerprint(self.server_public_key)


def load_key(directory: Path | None = None) -> Ed25519PrivateKey:
    """This PC's agent key, created (0600) the first time it is needed."""
    return signing.load_or_create_private_key((directory or agent_dir()) / KEY_FILE)


def load_state(directory: Path | None = None) -> AgentState | None:
    """The saved state, or None if this PC has never enrolled or paired."""
    path = (directory or agent_dir()) / STATE_FILE
    try:
        data = json.loads(path.read_text())
        return AgentState(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"The agent state file {path} is damaged.", hint="Enroll or pair this PC again.") from exc


def save_state(state: AgentState, directory: Path | None = None) -> None:
    write_private((directory or agent_dir()) / STATE_FILE, json.dumps(asdict(state), indent=2).encode())


def require_state(directory: Path | None = None) -> AgentState:
    state = load_state(directory)
    if state is None:
        raise ConfigError("This PC is not linked to a Helpline server yet.",
                          hint="Run `helpline pair CODE --server URL` with the code your engineer gives you.")
    return state


def accept_credential(
    key: Ed25519PrivateKey, answer: AgentCredential, *, pinned: str | None, expected_fingerprint: str | None
) -> None:
    """Check that the server's answer is signed by the key we trust; raise otherwise.

    ``pinned`` is the server key saved at an earlier enrollment or pairing;
    ``expected_fingerprint`` is one an admin handed out of band. Without
    either, the first key seen is trusted and pinned.
    """
    own = signing.public_key_b64(key)
    payload = signing.agent_binding_payload(answer.agent_id, own)
    if not signing.verify(answer.server_public_key, payload, answer.server_signature):
        raise HelplineError("The server's answer is not signed by its key.",
                            hint="Something between this PC and the server altered it; do not continue on this network.")
    got = signing.fingerprint(answer.server_public_key)
    if expected_fingerprint and got != expected_fingerprint.strip():
        raise HelplineError(f"The server's key is {got}, not the expected {expected_fingerprint}.",
                            hint="Check the address; ask your administrator for the server's fingerprint.")
    if pinned and pinned != answer.server_public_key:
        raise HelplineError(
            f"The server's key changed (now {got}).",
            hint="If your administrator replaced the server, remove the agent state and enroll again; otherwise stop.",
        )
