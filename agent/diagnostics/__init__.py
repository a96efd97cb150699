"""Diagnostics of the PC for `helpline share`: parallel collectors under hard time and size
budgets write raw files into a staging directory and return a :class:`CollectionReport`.

Redaction and bundling (:mod:`agent.bundle`) come after, from the staging directory
and the report; staged files are never redacted here. Only what a collector derives
from raw text (a normalised log line) goes through the redactor first, see
:meth:`CollectContext.redact_text`. Entry point: :func:`collect`.
"""

from .collect import collect, run_collector
from .collectors import ALL_COLLECTORS, Collector, collectors_for
from .context import CollectContext, CollectOptions, current_platform
from .model import CollectionReport, CollectorResult, CollectorStatus, Item, ItemKind, ItemStatus
from .runner import CommandResult, run_command

__all__ = [
    "ALL_COLLECTORS", "CollectContext", "CollectOptions", "CollectionReport", "Collector", "CollectorResult",
    "CollectorStatus", "CommandResult", "Item", "ItemKind", "ItemStatus", "collect", "collectors_for",
    "current_platform", "run_collector", "run_command",
]
