"""The report puts each table row on a line of its own: the final check reads the page line by line, and a
row (one setting and its value) is the unit it judges; a section on one long line is read whole, slowly."""

from __future__ import annotations

from agent.bundle.report_html import render_report


def test_every_table_row_of_the_report_ends_its_line():
    facts = {
        "network": {"interfaces": [{"name": f"eth{n}", "up": True, "mtu": 1500, "addresses": [f"ip-{n}"]}
                                   for n in range(15)]},
        "system": {"os": {"family": "linux", "name": "Debian", "version": "12"},
                   **{f"setting_{n}": f"value {n}" for n in range(15)}},
    }
    items = [{"path": f"system/file-{n}.txt", "file": f"raw/system/file-{n}.txt", "category": "system",
              "source": "cat", "kind": "file", "status": "ok", "duration": 0.01, "size": 100 + n,
              "redaction": {"status": "scrubbed", "counts": [], "reason": None}} for n in range(60)]
    collectors = [{"name": name, "category": name, "status": "ok", "duration": 0.1, "error": None, "items": 1}
                  for name in ("system", "network")]
    page = render_report({"items": items, "collectors": collectors}, {}, facts)
    assert "<td>eth14</td>" in page and "setting_14" in page and "file-59.txt" in page
    lines = page.split("\n")
    assert max(len(line) for line in lines) < 2000, max(lines, key=len)[:300]
    body_rows = page.count("</tr>") - page.count("</tr></thead>")
    assert page.count("</tr>\n") == body_rows
