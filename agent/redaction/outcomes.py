"""What the redactor reports about each file and what verification still finds."""

from __future__ import annotations

from dataclasses import dataclass, field

SCRUBBED = "scrubbed"  # dst written; every line went through the detectors
DROPPED = "dropped"  # src was examined and refused (binary, symlink, failure): no dst
NOT_SCRUBBED = "not_scrubbed"  # src could not be read at all (vanished, no permission): no dst


@dataclass
class FileRedaction:
    """The outcome for one file: whether it was scrubbed, and how many values each detector replaced.

    Only ``scrubbed`` files have an output; ``dropped`` and ``not_scrubbed`` files are
    listed with a reason so that nothing is ever left out silently.
    """

    path: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    reason: str | None = None


@dataclass
class Finding:
    """A detector match (or a leaked pseudonymised original) that verification found in a final file.

    ``line`` is 1-based; 0 means the whole file (a symlink or a file that cannot be read as text).
    """

    path: str
    line: int
    detector: str
