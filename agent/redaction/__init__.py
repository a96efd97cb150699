"""Fail-closed redaction of diagnostics before they leave the PC.

``Redactor`` scrubs collected files (secrets always; addresses, host and user names
on request) into the bundle directory and reports per file what happened, redacts
text and JSON documents (``redact_text``, ``redact_document``); ``verify_tree``
re-scans the result before upload and ``flags`` judges strings the same way.

The names below load on first use: the redactor's modules compile hundreds of
patterns, and code that only names its outcomes (``outcomes``, ``options``) or
hands the work to a share's bundle worker (:mod:`agent.bundle_worker`) does not
pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.lazy import lazy_exports

if TYPE_CHECKING:
    from agent.redaction.options import RedactionOptions
    from agent.redaction.outcomes import DROPPED, NOT_SCRUBBED, SCRUBBED, FileRedaction, Finding
    from agent.redaction.pseudonyms import PseudonymMap
    from agent.redaction.redactor import Redactor

_WHERE = {
    "RedactionOptions": "options", "DROPPED": "outcomes", "NOT_SCRUBBED": "outcomes", "SCRUBBED": "outcomes",
    "FileRedaction": "outcomes", "Finding": "outcomes", "PseudonymMap": "pseudonyms", "Redactor": "redactor",
}

__getattr__ = lazy_exports(__name__, _WHERE, globals())

__all__ = [
    "DROPPED",
    "NOT_SCRUBBED",
    "SCRUBBED",
    "FileRedaction",
    "Finding",
    "PseudonymMap",
    "RedactionOptions",
    "Redactor",
]
