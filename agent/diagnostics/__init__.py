"""Diagnostics of the PC for `helpline share`: parallel collectors under hard time and size
budgets write raw files into a staging directory and return a :class:`CollectionReport`.

Redaction and bundling (:mod:`agent.bundle`) come after, from the staging directory
and the report; staged files are never redacted here. Only what a collector derives
from raw text (a normalised log line) goes through the redactor first, see
:meth:`CollectContext.redact_text`. Entry point: :func:`collect`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .collect import collect, run_collector
    from .collectors import ALL_COLLECTORS, Collector, collectors_for
    from .context import CollectContext, CollectOptions, current_platform
    from .model import CollectionReport, CollectorResult, CollectorStatus, Item, ItemKind, ItemStatus
    from .runner import CommandResult, run_command

# Loaded on first use, so that `helpline share` can start its CPU sample (agent.diagnostics.cpu_sample)
# before paying for the collectors.
_WHERE = {
    "collect": "collect", "run_collector": "collect",
    "ALL_COLLECTORS": "collectors", "Collector": "collectors", "collectors_for": "collectors",
    "CollectContext": "context", "CollectOptions": "context", "current_platform": "context",
    "CollectionReport": "model", "CollectorResult": "model", "CollectorStatus": "model", "Item": "model",
    "ItemKind": "model", "ItemStatus": "model",
    "CommandResult": "runner", "run_command": "runner",
}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ALL_COLLECTORS", "CollectContext", "CollectOptions", "CollectionReport", "Collector", "CollectorResult",
    "CollectorStatus", "CommandResult", "Item", "ItemKind", "ItemStatus", "collect", "collectors_for",
    "current_platform", "run_collector", "run_command",
]
