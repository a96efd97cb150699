"""The bundle's ``report.html``: one self-contained page an engineer (or the user) can open
offline — inline CSS, no scripts, no external URLs — with a triage box first, then the
facts of every category, every item with its fate, and what redaction removed.

Every value is HTML-escaped; links only ever point at relative ``raw/...`` files.
It is rendered from the (already redacted) manifest, summary and facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from protocol.bundle import RAW_DIR

#: Rows shown per table before "N more" (the full data is in the raw files).
MAX_ROWS = 40
#: Characters of one value shown before it is cut.
MAX_VALUE_CHARS = 400
_MAX_DEPTH = 4

CATEGORY_TITLES = {
    "system": "System", "hardware": "Hardware", "network": "Network", "processes": "Processes",
    "services": "Services", "software": "Software", "logs": "Logs", "crashes": "Crashes",
    "environment": "Environment",
}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#1d2433;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
header.top{background:#1d2433;color:#fff;padding:18px 24px}
header.top h1{margin:0 0 4px;font-size:22px}
header.top .meta{color:#c9d1e0;font-size:13px}
header.top .meta span{margin-right:18px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
section{background:#fff;border:1px solid #e0e3e8;border-radius:6px;padding:4px 16px 12px;margin:16px 0}
.triage{border-left:6px solid #c0392b}
.triage.calm{border-left-color:#27ae60}
.triage ul{margin:6px 0;padding-left:20px}
table{border-collapse:collapse;width:100%;margin:6px 0;font-size:13px}
th,td{text-align:left;vertical-align:top;padding:3px 8px;border-bottom:1px solid #eceef2;word-break:break-word}
th{background:#f0f2f5;font-weight:600}
table.kv>tbody>tr>th{width:22%;background:#fafbfc;font-weight:500;color:#4a5468}
td.num,th.num{text-align:right;white-space:nowrap}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.more{color:#6b7487;font-style:italic}
.null{color:#9aa2b1}
.st{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;font-weight:600}
.st-ok,.st-scrubbed{background:#e3f5ea;color:#1e7b45}
.st-truncated,.st-timeout{background:#fff3d6;color:#8a5a00}
.st-error,.st-denied,.st-dropped,.st-not_scrubbed,.st-unlisted,.st-excluded{background:#fde6e4;color:#a5281b}
.st-not_found,.st-skipped,.st-no_file,.st-not_checked{background:#eceef2;color:#5b6476}
nav a{margin-right:12px}
footer{color:#6b7487;font-size:12px;margin-top:32px}
"""


def render_report(manifest: Mapping[str, Any], summary: Mapping[str, Any],
                  facts: Mapping[str, Any] | None = None) -> str:
    """Return the HTML page for a bundle from its manifest, summary and per-category facts (all redacted)."""
    facts = facts or {}
    extra = manifest.get("extra") if isinstance(manifest.get("extra"), dict) else {}
    os_info = summary.get("os") or {}
    hostname = manifest.get("hostname") or summary.get("hostname") or "unknown PC"
    ticket = extra.get("ticket") if isinstance(extra.get("ticket"), str) else None
    if ticket and isinstance(extra.get("ticket_title"), str) and extra["ticket_title"]:
        ticket = f"{ticket} — {extra['ticket_title']}"
    elif not ticket:
        ticket = "a new ticket, numbered when this is sent" if extra.get("new_ticket") is True else "none chosen yet"
    categories = _categories(manifest, facts)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Helpline diagnostics: {_h(hostname)}</title>",
        f"<style>{_CSS}</style></head><body>",
        '<header class="top">',
        f"<h1>Diagnostics of {_h(hostname)}</h1>",
        '<div class="meta">',
        f"<span>Ticket: <b>{_h(ticket)}</b></span>",
        f"<span>OS: {_h(os_info.get('pretty_name') or os_info.get('name') or manifest.get('platform'))}</span>",
        f"<span>Collected: {_h(manifest.get('created_at'))}</span>",
        f"<span>Helpline {_h(manifest.get('helpline_version'))}</span>",
        "</div></header><main>",
        _nav(categories),
        _triage(summary),
        _from_user(extra),
        _overview(summary),
    ]
    for category in categories:
        parts.append(_category_section(category, facts.get(category), manifest))
    parts += [_items_section(manifest), _redaction_section(manifest)]
    parts.append(f"<footer>Bundle schema {_h(manifest.get('schema_version'))}; collected in "
                 f"{_h((manifest.get('collection') or {}).get('duration'))} s of a "
                 f"{_h((manifest.get('collection') or {}).get('deadline'))} s budget. "
                 "Everything here was redacted on the PC before it was sent.</footer>")
    parts.append("</main></body></html>")
    return "\n".join(part for part in parts if part) + "\n"


def render_plain_report() -> str:
    """Return the stand-in page used when the full page fails the bundle's final check (few fixed words)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Diagnostics</title></head>"
            "<body><p>The readable page was left out by the final check. summary.json, manifest.json and the "
            "files under raw/ hold everything.</p></body></html>\n")


# -- sections ---------------------------------------------------------------------------


def _nav(categories: list[str]) -> str:
    links = ['<a href="#triage">Triage</a>', '<a href="#overview">Overview</a>']
    links += [f'<a href="#cat-{_h(c)}">{_h(_title(c))}</a>' for c in categories]
    links += ['<a href="#items">Files</a>', '<a href="#redaction">Redaction</a>']
    return f"<nav>{' '.join(links)}</nav>"


def _triage(summary: Mapping[str, Any]) -> str:
    attention = [line for line in summary.get("attention") or [] if isinstance(line, str)]
    errors = (summary.get("errors") or {}).get("top") or []
    crashes = (summary.get("crashes") or {}).get("recent") or []
    calm = not attention and not errors and not crashes
    out = [f'<section id="triage" class="triage{" calm" if calm else ""}"><h2>Triage</h2>']
    if attention:
        out.append("<ul>" + "".join(f"<li>{_h(line)}</li>" for line in attention) + "</ul>")
    else:
        out.append("<p>No full disk, failed service, crash or unreachable host was found.</p>")
    if errors:
        window = (summary.get("errors") or {}).get("window_hours")
        window_text = f"last {window:g} h" if isinstance(window, (int, float)) else "recent"
        out.append(f"<h3>Most frequent errors ({_h(window_text)})</h3>")
        out.append(_table(["Count", "Message", "Source"],
                          [[_num(e.get("count")),
                            _code(e.get("message")) + (f'<br><small>e.g. {_code(e.get("example"))}</small>'
                                                       if e.get("example") else ""),
                            _h(e.get("source"))] for e in errors[:5]],
                          numeric={0}))
    if crashes:
        out.append("<h3>Recent crashes</h3>")
        # The crash report's own title ("python3 crashed with SIGSEGV in …") says more than a signal alone.
        out.append(_table(["Time", "Program", "Detail"],
                          [[_h(c.get("time")), _h(c.get("program")),
                            _h(" — ".join(filter(None, [c.get("detail"), c.get("title")])) or None)]
                           for c in crashes[:5]]))
    out.append("</section>")
    return "".join(out)


def _from_user(extra: Mapping[str, Any]) -> str:
    answers = {key: value for key, value in extra.items() if key != "ticket"}
    if not answers:
        return ""
    rows = [[_h(str(key).replace("_", " ")), _value(value, 1)] for key, value in answers.items()]
    return f'<section id="reported"><h2>As reported on the PC</h2>{_kv(rows)}</section>'


def _overview(summary: Mapping[str, Any]) -> str:
    os_info = summary.get("os") or {}
    hardware = summary.get("hardware") or {}
    network = summary.get("network") or {}
    software = summary.get("software") or {}
    timezone = summary.get("timezone") or {}
    route = network.get("default_route") or {}
    rows = [
        ["Operating system", _h(os_info.get("pretty_name") or os_info.get("name"))],
        ["Kernel / build", _h(os_info.get("kernel") or os_info.get("build"))],
        ["Uptime", _h(f"{summary.get('uptime')} (booted {summary.get('boot_time')})"
                      if summary.get("uptime") else None)],
        ["Time zone", _h(" ".join(filter(None, [timezone.get("name"), timezone.get("utc_offset")])) or None)],
        ["CPU", _h(f"{hardware.get('cpu_model')} ({hardware.get('cores')} threads)"
                   if hardware.get("cpu_model") else None)],
        ["Memory", _h(f"{_bytes(hardware.get('memory_total'))}, {hardware.get('memory_used_percent')} % used"
                      if hardware.get("memory_total") else None)],
        ["Default route", _h(f"{route.get('gateway')} via {route.get('interface')}" if route else None)],
        ["DNS servers", _h(", ".join(network.get("dns") or []) or None)],
        ["Packages", _h(f"{software.get('package_count')} ({software.get('manager')})"
                        if software.get("package_count") is not None else None)],
    ]
    out = [f'<section id="overview"><h2>Overview</h2>{_kv(rows)}']
    disks = summary.get("disks") or []
    if disks:
        out.append("<h3>Disks</h3>")
        out.append(_table(["Mount", "File system", "Size", "Free", "Used"],
                          [[_h(d.get("mount")), _h(d.get("fs")), _bytes_cell(d.get("size")), _bytes_cell(d.get("free")),
                            _h(f"{d.get('used_percent')} %" if d.get("used_percent") is not None else None)]
                           for d in disks[:MAX_ROWS]], numeric={2, 3, 4}))
    proxies = network.get("proxies") or []
    if proxies:
        out.append("<h3>Proxies</h3>")
        out.append(_table(["Where", "Setting", "Value"],
                          [[_h(p.get("source")), _h(p.get("name")), _code(p.get("value"))] for p in proxies]))
    probes = network.get("reachability") or []
    if probes:
        out.append("<h3>Reachability</h3>")
        out.append(_table(["Target", "DNS", "TCP", "Latency", "Problem"],
                          [[_h(p.get("target")), _yes_no(p.get("dns_ok")), _yes_no(p.get("tcp_ok")),
                            _h(f"{p['latency_ms']} ms" if p.get("latency_ms") is not None else None),
                            _h(p.get("problem"))] for p in probes]))
    out.append("</section>")
    return "".join(out)


def _category_section(category: str, facts: Any, manifest: Mapping[str, Any]) -> str:
    items = [item for item in manifest.get("items") or [] if item.get("category") == category]
    collector = next((c for c in manifest.get("collectors") or [] if c.get("category") == category), {})
    status = collector.get("status")
    if status == "ok" and isinstance(facts, dict) and facts.get("checked") is False:
        status = "not_checked"  # the collector ran, but had nothing to ask (no systemd): never a green "ok"
    out = [f'<section id="cat-{_h(category)}"><h2>{_h(_title(category))} {_status(status) if status else ""}</h2>']
    if collector.get("error"):
        out.append(f"<p>Collector problem: {_code(collector['error'])}</p>")
    if isinstance(facts, dict) and facts:
        facts_file = next((i.get("file") for i in items if i.get("path", "").endswith("facts.json") and i.get("file")),
                          None)
        out.append(_value(facts, 0, more_in=facts_file))
    elif status != "excluded":
        out.append('<p class="null">No facts (the collector did not finish or found nothing).</p>')
    files = [item for item in items if item.get("file")]
    if files:
        out.append("<p>Files: " + ", ".join(_link(item) for item in files) + "</p>")
    out.append("</section>")
    return "".join(out)


def _items_section(manifest: Mapping[str, Any]) -> str:
    rows = []
    for item in manifest.get("items") or []:
        redaction = item.get("redaction") or {}
        rows.append([
            _link(item) if item.get("file") else f'<span class="mono">{_h(item.get("path"))}</span>',
            _h(item.get("category")),
            f'<span class="mono">{_h(_cut(item.get("source")))}</span>',
            _status(item.get("status")),
            _status(redaction.get("status")),
            _bytes_cell(item.get("size")),
            _h(f"{item['duration']:.2f} s" if isinstance(item.get("duration"), (int, float)) else None),
            _counts(redaction.get("counts")),
            _h(redaction.get("reason") or item.get("note")) if redaction.get("reason") or item.get("note") else "",
        ])
    totals = manifest.get("totals") or {}
    head = (f"<p>{_h(totals.get('files'))} files ({_bytes(totals.get('bytes'))}) in the bundle; "
            f"{_h(totals.get('left_out'))} left out.</p>")
    table = _table(["File", "Category", "Source", "Status", "Redaction", "Size", "Time", "Replaced", "Note"], rows,
                   numeric={5, 6}, limit=None)
    return f'<section id="items"><h2>Every file</h2>{head}{table}</section>'


def _redaction_section(manifest: Mapping[str, Any]) -> str:
    totals = manifest.get("totals") or {}
    out = ['<section id="redaction"><h2>What was redacted or left out</h2>']
    for key, label in (("redactions", "Values replaced in the files"),
                       ("metadata_redactions", "Values replaced in facts and descriptions")):
        counts = totals.get(key) or []
        if counts:
            out.append(f"<h3>{label}</h3>")
            out.append(_table(["Detector", "Count"], [[_h(c.get("detector")), _num(c.get("count"))] for c in counts],
                              numeric={1}))
        else:
            out.append(f"<p>{label}: none.</p>")
    left_out = [item for item in manifest.get("items") or []
                if (item.get("redaction") or {}).get("status") in ("dropped", "not_scrubbed")]
    if left_out:
        out.append("<h3>Files left out</h3>")
        out.append(_table(["File", "Outcome", "Why"],
                          [[f'<span class="mono">{_h(i.get("path"))}</span>', _status(i["redaction"]["status"]),
                            _h(i["redaction"].get("reason"))] for i in left_out], limit=None))
    excluded = manifest.get("excluded") or []
    out.append(f"<p>Categories excluded by choice: {_h(', '.join(excluded) or 'none')}.</p>")
    out.append(f"<p>{_h(final_check_text(manifest.get('verification') or {}))}</p>")
    out.append("</section>")
    return "".join(out)


def final_check_text(verification: Mapping[str, Any]) -> str:
    """Say what the final check did, never what it guarantees: no check can prove a file holds no secret."""
    dropped = len(verification.get("dropped") or [])
    lines, values = verification.get("withheld_lines") or 0, verification.get("withheld_values") or 0
    return (f"Final check: checked {verification.get('files_checked') or 0} file(s) for "
            f"{verification.get('kinds_checked') or 0} kinds of secret; withheld {lines} line(s) and "
            f"{values} value(s) in the summary; removed {dropped} file(s).")


# -- value rendering ------------------------------------------------------------------------


def _value(value: Any, depth: int, more_in: str | None = None) -> str:
    """Render any JSON value: dicts as key/value tables, lists of dicts as tables, scalars escaped."""
    if value is None:
        return '<span class="null">none</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _h(value)
    if isinstance(value, str):
        return _h(_cut(value)) if value else '<span class="null">empty</span>'
    if depth >= _MAX_DEPTH:
        return '<span class="more">(nested deeper; see the raw file)</span>'
    if isinstance(value, dict):
        if not value:
            return '<span class="null">none</span>'
        keys = list(value)
        rows = [[_h(key), _value(value[key], depth + 1)] for key in keys[:MAX_ROWS]]
        return _kv(rows) + _more(len(keys) - MAX_ROWS, more_in)
    if isinstance(value, list):
        if not value:
            return '<span class="null">none</span>'
        if all(isinstance(entry, dict) for entry in value):
            columns: list[str] = []
            for entry in value[:MAX_ROWS]:
                columns += [key for key in entry if key not in columns]
            columns = columns[:10]
            rows = [[_value(entry.get(column), depth + 1) for column in columns] for entry in value[:MAX_ROWS]]
            return _table(columns, rows) + _more(len(value) - MAX_ROWS, more_in)
        shown = ", ".join(_value(entry, depth + 1) for entry in value[:MAX_ROWS])
        return shown + _more(len(value) - MAX_ROWS, more_in)
    return _h(_cut(str(value)))


def _table(headers: list[str], rows: list[list[str]], *, numeric: set[int] = frozenset(),
           limit: int | None = MAX_ROWS) -> str:
    """Render a table; ``headers`` are escaped here, cells must already be HTML."""
    shown = rows if limit is None else rows[:limit]
    head = "".join(f'<th{" class=num" if i in numeric else ""}>{_h(h)}</th>' for i, h in enumerate(headers))
    # A row a line: the page's source stays readable, and the final check reads lines, not one long line per table.
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{cell}</td>'
                                    for i, cell in enumerate(row)) + "</tr>\n" for row in shown)
    extra = "" if limit is None else _more(len(rows) - limit, None)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>{extra}"


def _kv(rows: list[list[str]]) -> str:
    body = "".join(f"<tr><th>{key}</th><td>{value}</td></tr>\n" for key, value in rows)
    return f'<table class="kv"><tbody>\n{body}</tbody></table>'


def _more(count: int, more_in: str | None) -> str:
    if count <= 0:
        return ""
    where = f' (all of them in <a href="{_href(more_in)}">{_h(more_in)}</a>)' if more_in else " (see the raw files)"
    return f'<p class="more">... {count} more{where}</p>'


def _link(item: Mapping[str, Any]) -> str:
    return f'<a class="mono" href="{_href(item.get("file"))}">{_h(item.get("path"))}</a>'


def _href(path: Any) -> str:
    """A relative link to a bundle file; anything that is not under raw/ becomes a dead anchor."""
    text = str(path or "")
    if not text.startswith(f"{RAW_DIR}/") or ".." in text.split("/") or ":" in text:
        return "#"
    return _h(quote(text, safe="/"))


def _status(status: Any) -> str:
    text = str(status) if status is not None else "none"
    css = "".join(ch for ch in text if ch.isalnum() or ch == "_")
    return f'<span class="st st-{css}">{_h(text.replace("_", " "))}</span>'


def _counts(counts: Any) -> str:
    if not counts:
        return ""
    return _h(", ".join(f"{c.get('detector')} \u00d7 {c.get('count')}" for c in counts if isinstance(c, dict)))


def _categories(manifest: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for collector in manifest.get("collectors") or []:
        if collector.get("category") and collector["category"] not in found:
            found.append(collector["category"])
    found += [category for category in facts if category not in found]
    return found


def _title(category: str) -> str:
    return CATEGORY_TITLES.get(category, category.replace("_", " ").capitalize())


def _code(value: Any) -> str:
    return f'<code>{_h(_cut(value))}</code>' if value is not None else '<span class="null">none</span>'


def _yes_no(value: Any) -> str:
    return '<span class="null">?</span>' if value is None else ("yes" if value else "<b>no</b>")


def _num(value: Any) -> str:
    return _h(value) if value is not None else ""


def _bytes(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop always returns


def _bytes_cell(value: Any) -> str:
    return _h(_bytes(value)) if value is not None else ""


def _cut(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _h(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute value."""
    if value is None:
        return '<span class="null">none</span>'
    return escape(str(value), quote=True)
