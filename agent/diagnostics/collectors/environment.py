"""The environment variables that explain how programs behave (locale, proxies, PATH, desktop).

Only allow-listed names are kept — the list is an option — because the
environment is where tokens and passwords end up. Values are written as they
are: the redactor downstream scrubs credentials inside proxy URLs and the like.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from ..context import CollectContext
from .base import ALL_PLATFORMS, Collector


class EnvironmentCollector(Collector):
    """Allow-listed environment variables, the same on every platform."""

    name = "environment"
    category = "environment"
    description = "Allow-listed environment variables of the agent's session (locale, proxies, PATH, desktop)."
    platforms = ALL_PLATFORMS
    timeout = 2.0

    def collect(self, ctx: CollectContext) -> dict[str, Any]:
        kept = allowed_variables(ctx.env, ctx.options.env_allowlist, case_sensitive=ctx.platform != "windows")
        ctx.write_text("environment/variables.txt", "".join(f"{name}={value}\n" for name, value in kept.items()),
                       source="python:os.environ")
        return {"variables": kept, "count": len(kept), "omitted_count": len(ctx.env) - len(kept)}


def allowed_variables(env, allowlist, *, case_sensitive: bool = True) -> dict[str, str]:
    """Return the variables of ``env`` whose names match an allowlist entry (``*`` wildcards), sorted by name."""
    def matches(name: str) -> bool:
        if case_sensitive:
            return any(fnmatch.fnmatchcase(name, pattern) for pattern in allowlist)
        return any(fnmatch.fnmatchcase(name.upper(), pattern.upper()) for pattern in allowlist)

    return {name: env[name] for name in sorted(env) if matches(name)}
