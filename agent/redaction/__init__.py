"""Fail-closed redaction of diagnostics before they leave the PC.

``Redactor`` scrubs collected files (secrets always; addresses, host and user names
on request) into the bundle directory and reports per file what happened, redacts
text and JSON documents (``redact_text``, ``redact_document``); ``verify_tree``
re-scans the result before upload and ``flags`` judges strings the same way.
"""

from agent.redaction.options import RedactionOptions
from agent.redaction.outcomes import DROPPED, NOT_SCRUBBED, SCRUBBED, FileRedaction, Finding
from agent.redaction.pseudonyms import PseudonymMap
from agent.redaction.redactor import Redactor
from agent.regexes import AGENT_CACHE

AGENT_CACHE.save()  # the patterns compiled above, for the next start (where the agent's directory is writable)

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
