"""Shared fixtures for the bundle tests: one real collection on this PC with secrets planted
in a log file, in the environment and in a stray staging file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.diagnostics import CollectionReport, CollectOptions, collect

#: Secrets planted where the collectors will pick them up; none may reach a bundle.
LOG_PASSWORD = "CorrectHorseBatteryStaple"
URL_PASSWORD = "S3cretPass"
GITHUB_TOKEN = "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5z"
DEPLOY_PASSWORD = "Zq9xLmT4vBw"
STRAY_SECRET = "StrayOnlyValue"
SECRETS = (LOG_PASSWORD, URL_PASSWORD, GITHUB_TOKEN, DEPLOY_PASSWORD, STRAY_SECRET)
#: Pieces of the secrets that survive if digits are replaced before redaction (the logs collector redacts first).
FRAGMENTS = ("cretPass", "ghp_aB", "xLmT", "StrayOnly")

LOG_LINES = (
    "2024-05-01T10:00:00Z app[12]: ERROR login failed for svc password=" + LOG_PASSWORD,
    "2024-05-01T10:00:01Z app[12]: ERROR upstream http://user:" + URL_PASSWORD + "@proxy:3128 refused",
    "2024-05-01T10:00:02Z app[12]: ERROR bad credentials token " + GITHUB_TOKEN,
    "2024-05-01T10:00:03Z app[12]: ERROR clone https://deploy:" + DEPLOY_PASSWORD + "@git.example.com/r.git failed",
    "2024-05-01T10:00:04Z app[12]: WARNING disk almost full",
)


@dataclass
class Collected:
    """A real collection: its report, staging directory and the log file it copied."""

    report: CollectionReport
    staging: Path
    log_file: Path


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Collected:
    """Collect this PC (Linux here) once per module, with the planted secrets and a stray file."""
    root = tmp_path_factory.mktemp("collect")
    log_file = root / "logs-src" / "app.log"
    log_file.parent.mkdir()
    log_file.write_text("\n".join(LOG_LINES) + "\n")
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    env["HTTPS_PROXY"] = f"http://user:{URL_PASSWORD}@proxy:3128"
    staging = root / "stage"
    report = collect(CollectOptions(log_globs=[str(log_file)], deadline=20), staging, env=env)
    stray = staging / "logs" / "stray-notes.txt"
    stray.write_text(f"left behind by a collector: secret={STRAY_SECRET}\n")
    return Collected(report, staging, log_file)


def all_bytes(root: Path) -> bytes:
    """Every byte of every file under ``root`` (file names included), for leak greps."""
    chunks = []
    for path in sorted(root.rglob("*")):
        chunks.append(str(path.relative_to(root)).encode())
        if path.is_file() and not path.is_symlink():
            chunks.append(path.read_bytes())
    return b"\n".join(chunks)
