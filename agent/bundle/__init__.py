"""The diagnostics bundle: a redacted copy of a collection with its manifest, triage summary and
readable report (:func:`build_bundle`), and what changed between two bundles (:func:`diff_bundles`).

Member names and the manifest format are the protocol's (:mod:`protocol.bundle`);
this package uses the diagnostics' report and the redactor, and diagnostics never
import it.

Modules: ``build`` (the steps in order), ``entries`` (the staging pass: one entry
per item, each file scrubbed), ``paths`` (safe, unique, redacted paths under
raw/), ``metadata`` (the report's own words redacted), ``manifest`` (the
manifest from the entries), ``final_check`` (write, verify, fix or refuse),
``preview`` (per-category totals), ``result`` (a finished bundle), ``summary``,
``report_html`` and ``diff``. The names below load their module when first used:
a share's command reads a finished bundle (``result``) without loading the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "BundleResult": "result", "build_bundle": "build", "BundleDiff": "diff", "diff_bundles": "diff",
    "CategoryPreview": "preview", "attention_lines": "summary", "build_summary": "summary",
}

__all__ = ["BundleDiff", "BundleResult", "CategoryPreview", "attention_lines", "build_bundle", "build_summary",
           "diff_bundles"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
