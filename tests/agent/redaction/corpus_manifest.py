"""The redaction test corpus: where it lives and what was planted in it (see corpus/planted.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agent.redaction import RedactionOptions

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class Planted:
    """One secret written into a corpus file, and the detector that must remove it."""

    file: str
    detector: str
    value: str


def load_manifest() -> dict:
    return json.loads((CORPUS / "planted.json").read_text(encoding="utf-8"))


def planted_values() -> list[Planted]:
    return [Planted(**entry) for entry in load_manifest()["planted"]]


def identity_options() -> RedactionOptions:
    raw = load_manifest()["identity_options"]
    return RedactionOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def options_for(corpus_dir: str) -> RedactionOptions:
    """Secrets are always on; the identities corpus also switches on every pseudonymisation."""
    return identity_options() if corpus_dir == "identities" else RedactionOptions()
