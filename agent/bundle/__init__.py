"""The diagnostics bundle: a redacted copy of a collection with its manifest, triage summary and
readable report (:func:`build_bundle`), and what changed between two bundles (:func:`diff_bundles`).

Member names and the manifest format are the protocol's (:mod:`protocol.bundle`);
this package uses the diagnostics' report and the redactor, and diagnostics never
import it.

Modules: ``build`` (the steps in order), ``entries`` (the staging pass: one entry
per item, each file scrubbed), ``paths`` (safe, unique, redacted paths under
raw/), ``metadata`` (the report's own words redacted), ``manifest`` (the
manifest from the entries), ``final_check`` (write, verify, fix or refuse),
``preview`` (per-category totals), ``result`` (what a finished bundle is),
``summary``, ``report_html`` and ``diff``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.lazy import lazy_exports

if TYPE_CHECKING:
    from .build import build_bundle
    from .diff import BundleDiff, diff_bundles
    from .result import BundleResult, CategoryPreview
    from .summary import attention_lines, build_summary

# Loaded on first use: what a share shows of a bundle built in another process (agent.bundle.result) does not
# load the redactor, which the building modules do.
_WHERE = {
    "build_bundle": "build", "BundleDiff": "diff", "diff_bundles": "diff", "BundleResult": "result",
    "CategoryPreview": "result", "attention_lines": "summary", "build_summary": "summary",
}

__getattr__ = lazy_exports(__name__, _WHERE, globals())


__all__ = ["BundleDiff", "BundleResult", "CategoryPreview", "attention_lines", "build_bundle", "build_summary",
           "diff_bundles"]
