"""The protocol version agents and servers speak, and how each side tells the other.

Every agent request carries ``Helpline-Protocol: <n>`` (agent/http.py); every
server answer carries the server's own. A server serves agents from
``MIN_AGENT_PROTOCOL`` up, so agents and servers of adjacent versions work
together; an agent older than that is answered 426 with "this agent is too old
for the server: upgrade it". A request without the header comes from an agent
that predates the header: version 1, accepted while ``MIN_AGENT_PROTOCOL`` is 1.

Versions:
  1  agents before the header (signed requests, engineer requests, snapshots)
  2  the header itself; signed per-group policies (``POST /v1/agent/policy``)
"""

from __future__ import annotations

#: The release of Helpline this code is: the one place it is written. pyproject.toml reads it from here
#: (setuptools parses the assignment without importing), and the agent, the CLI and the server show it, so no
#: command asks the installed package's metadata (importlib.metadata, the email parser, a walk of sys.path).
HELPLINE_VERSION = "0.1.0"
#: The version this code speaks.
PROTOCOL_VERSION = 2
#: The oldest agent version this server still serves.
MIN_AGENT_PROTOCOL = 1
#: The header both sides send their version in.
PROTOCOL_HEADER = "Helpline-Protocol"
#: The version an agent or server that sends no header speaks.
UNSTATED = 1
#: The first version whose servers deliver group policies.
POLICIES_SINCE = 2


def parse_version(value: str | None) -> int | None:
    """The version a header states: UNSTATED when absent, None when it is not a small positive whole number."""
    if value is None:
        return UNSTATED
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 6 or int(value) < 1:
        return None
    return int(value)


def too_old_message(agent_version: int, minimum: int | None = None) -> str:
    return (f"this agent is too old for the server: upgrade it (it speaks protocol {agent_version}, "
            f"the server needs {minimum if minimum is not None else MIN_AGENT_PROTOCOL} or newer)")
