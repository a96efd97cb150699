"""The diagnostics bundle: a redacted copy of a collection with its manifest, triage summary and
readable report (:func:`build_bundle`), and what changed between two bundles (:func:`diff_bundles`).

Member names and the manifest format are the protocol's (:mod:`protocol.bundle`);
this package uses the diagnostics' report and the redactor, and diagnostics never
import it.

Modules: ``build`` (the steps in order), ``entries`` (the staging pass: one entry
per item, each file scrubbed), ``paths`` (safe, unique, redacted paths under
raw/), ``metadata`` (the report's own words redacted), ``manifest`` (the
manifest from the entries), ``final_check`` (write, verify, fix or refuse),
``preview`` (per-category totals), ``summary``, ``report_html`` and ``diff``.
"""

from agent.regexes import AGENT_CACHE

from .build import BundleResult, build_bundle
from .diff import BundleDiff, diff_bundles
from .preview import CategoryPreview
from .summary import attention_lines, build_summary

__all__ = ["BundleDiff", "BundleResult", "CategoryPreview", "attention_lines", "build_bundle", "build_summary",
           "diff_bundles"]

AGENT_CACHE.save()  # the bundle's patterns, for the next start (see agent.regexes)
