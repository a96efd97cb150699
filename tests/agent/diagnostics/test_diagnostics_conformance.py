"""Every registered collector follows the contract: declared fully, and on this Linux PC it
yields JSON facts plus items with valid statuses whose files sit inside its own folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agent.diagnostics.collect import run_collector
from agent.diagnostics.collectors import ALL_COLLECTORS, collectors_for
from agent.diagnostics.collectors.base import COMMON_FORBIDDEN_PATHS, Collector
from agent.diagnostics.context import PLATFORMS, CollectContext, CollectOptions
from agent.diagnostics.model import CollectorStatus, ItemKind, ItemStatus

LINUX_CATEGORIES = {"system", "hardware", "network", "processes", "services", "software", "logs", "crashes",
                    "environment", "kernel", "printers", "clock", "netconfig", "updates", "devices", "storage", "display"}
FILE_STATUSES = {ItemStatus.OK, ItemStatus.TRUNCATED, ItemStatus.ERROR, ItemStatus.TIMEOUT}


def test_registry_names_are_unique_and_cover_every_category():
    names = [collector.name for collector in ALL_COLLECTORS]
    assert len(names) == len(set(names))
    assert {collector.category for collector in ALL_COLLECTORS} == LINUX_CATEGORIES
    for platform in PLATFORMS:
        assert {c.category for c in collectors_for(platform)} == LINUX_CATEGORIES


@pytest.mark.parametrize("collector", ALL_COLLECTORS, ids=lambda c: c.name)
def test_collector_is_fully_declared(collector: Collector):
    assert collector.name and collector.name.isidentifier()
    assert collector.category and collector.category.isidentifier()
    assert len(collector.description) >= 20 and collector.description[0].isupper()
    assert collector.platforms and collector.platforms <= set(PLATFORMS)
    assert 0 < collector.timeout <= 30
    assert collector.forbidden_paths, "forbidden_paths must be declared"
    assert set(COMMON_FORBIDDEN_PATHS) <= set(collector.forbidden_paths)
    for platform in collector.platforms:
        overridden = type(collector).collect is not Collector.collect
        assert overridden or callable(getattr(collector, f"collect_{platform}", None)), \
            f"{collector.name} declares {platform} but has no collector for it"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="runs the real Linux collectors")
@pytest.mark.parametrize("collector", collectors_for("linux"), ids=lambda c: c.name)
def test_collector_runs_cleanly_on_this_pc(collector: Collector, tmp_path: Path):
    root = CollectContext(tmp_path / "stage", "linux", CollectOptions())
    ctx = root.for_collector(collector.category, collector.effective_timeout(10.0), collector.forbidden_paths)
    assert collector.applies(root)
    result = run_collector(collector, ctx)

    assert result.status is CollectorStatus.OK, result.error
    assert isinstance(result.facts, dict) and result.facts
    json.dumps(result.to_dict())
    paths = [item.path for item in result.items]
    assert f"{collector.category}/facts.json" in paths
    assert len(paths) == len(set(paths)), "two items share a staging path"
    stage = (tmp_path / "stage").resolve()
    for item in result.items:
        assert isinstance(item.status, ItemStatus) and isinstance(item.kind, ItemKind)
        assert item.category == collector.category
        assert item.path.startswith(f"{collector.category}/") and ".." not in item.path.split("/")
        target = (stage / item.path).resolve()
        assert stage in target.parents
        if item.status in FILE_STATUSES:
            assert target.is_file(), item
            assert target.stat().st_size == item.size, item
        else:
            assert item.note, f"{item.path} is {item.status.value} without saying why"
        assert item.duration >= 0
    facts_file = json.loads((stage / f"{collector.category}/facts.json").read_text())
    assert facts_file == result.facts
