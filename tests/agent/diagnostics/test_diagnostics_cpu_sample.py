"""The early CPU reading a share takes when it starts, and the processes collector that finishes it."""

from __future__ import annotations

import os
from collections import namedtuple

import pytest

from agent.diagnostics import collect
from agent.diagnostics.collectors.processes import ProcessesCollector
from agent.diagnostics.context import CollectOptions
from agent.diagnostics.cpu_sample import MIN_SAMPLE_SECONDS, SAMPLE_SECONDS, STALE_SECONDS, CpuSample, busy_percent

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_collector_waits_only_for_what_is_left_of_the_interval() -> None:
    clock = Clock()
    sample = CpuSample(clock=clock)
    assert sample.wait_time(10.0) == pytest.approx(SAMPLE_SECONDS)
    clock.now += SAMPLE_SECONDS / 3
    assert sample.wait_time(10.0) == pytest.approx(SAMPLE_SECONDS * 2 / 3)
    assert sample.wait_time(0.05) == pytest.approx(0.05), "never longer than the collector's budget"
    clock.now += SAMPLE_SECONDS
    assert sample.wait_time(10.0) == 0.0
    assert sample.fresh()
    clock.now += STALE_SECONDS
    assert not sample.fresh()


def test_processes_are_primed_and_read_back_this_process_included() -> None:
    sample = CpuSample()
    assert os.getpid() in sample.processes
    assert sample.process_percent(os.getpid()) is not None
    assert sample.process_percent(-1) is None, "a process that was not primed has no percentage"


def test_busy_percent_counts_what_is_not_idle_or_waiting_and_not_guest_time_twice() -> None:
    before = Times(100, 0, 50, 800, 50, 0, 0, 0, 10, 0)
    after = Times(130, 0, 60, 850, 60, 0, 0, 0, 20, 0)
    # deltas: user 30 (10 of it guest), system 10, idle 50, iowait 10: busy 40 of 100 (guest counted once)
    assert busy_percent(before, after) == 40.0
    assert busy_percent(before, before) == 0.0


def collect_processes(tmp_path, sample):
    report = collect(CollectOptions(), tmp_path / "staging", collectors=[ProcessesCollector()], cpu_sample=sample)
    result = report.result("processes")
    assert result.status.value == "ok", result.error
    return result.facts


def test_an_early_sample_old_enough_is_finished_without_waiting(tmp_path) -> None:
    clock = Clock()
    sample = CpuSample(clock=clock)
    clock.now += 0.75  # the share loaded its code and asked the server meanwhile
    facts = collect_processes(tmp_path, sample)
    assert facts["cpu_sample_seconds"] == 0.75, "the interval measured is the early sample's"
    assert facts["count"] >= 1 and facts["top_cpu"]


def test_a_stale_early_sample_is_replaced_by_a_fresh_one(tmp_path) -> None:
    clock = Clock()
    sample = CpuSample(clock=clock)
    clock.now += STALE_SECONDS + 1  # the person took their time answering the questions
    facts = collect_processes(tmp_path, sample)
    assert MIN_SAMPLE_SECONDS <= facts["cpu_sample_seconds"] < STALE_SECONDS


def test_without_an_early_sample_the_collector_measures_an_interval_of_its_own(tmp_path) -> None:
    facts = collect_processes(tmp_path, None)
    assert facts["cpu_sample_seconds"] >= MIN_SAMPLE_SECONDS


class Event:
    """A threading.Event stand-in whose wait moves the test's clock (set: returns at once)."""

    def __init__(self, clock: Clock, is_set: bool):
        self.clock, self.set_ = clock, is_set
        self.waited: list[float] = []

    def is_set(self) -> bool:
        return self.set_

    def wait(self, timeout: float) -> bool:
        self.waited.append(timeout)
        if not self.set_:
            self.clock.now += timeout
        return self.set_


@pytest.mark.parametrize("others_done", [True, False], ids=["last one left", "others still working"])
def test_the_interval_is_the_shortest_once_the_collector_is_the_last_one(others_done: bool) -> None:
    # Measuring longer while other collectors work costs nothing; once none does, the share would wait for it.
    clock = Clock()
    sample = CpuSample(clock=clock)
    last_one = Event(clock, others_done)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    sample.wait(10.0, last_one, sleep=sleep)
    assert sample.age() == pytest.approx(MIN_SAMPLE_SECONDS if others_done else SAMPLE_SECONDS)
    fresh = CpuSample(clock=clock)
    fresh.wait(0.05, Event(clock, False), sleep=sleep)
    assert fresh.age() == pytest.approx(0.05), "never longer than the collector's budget"
    alone = CpuSample(clock=clock)
    alone.wait(10.0, None, sleep=sleep)
    assert alone.age() == pytest.approx(SAMPLE_SECONDS), "without word of the others, the whole interval"


def test_the_interval_stretches_while_a_slower_collector_works(tmp_path) -> None:
    from agent.diagnostics.collectors.base import ALL_PLATFORMS, Collector

    class Slow(Collector):
        name = category = "slow"
        platforms = ALL_PLATFORMS
        description = "takes its time"

        def collect(self, ctx):
            ctx.last_one.wait(SAMPLE_SECONDS + 1.0)  # the processes collector is still measuring: not set yet
            return {"set_while_measured": ctx.last_one.is_set()}

    report = collect(CollectOptions(), tmp_path / "staging", collectors=[ProcessesCollector(), Slow()])
    assert report.result("processes").facts["cpu_sample_seconds"] >= SAMPLE_SECONDS
    assert report.result("slow").facts == {"set_while_measured": True}, "set once one collector was left"


def test_the_table_is_read_during_the_interval_and_only_cpu_readings_after_it(tmp_path, monkeypatch) -> None:
    from agent.diagnostics.collectors import processes

    order: list[str] = []
    real_iter = processes.psutil.process_iter

    def process_iter(*args, **kwargs):
        order.append("table")
        return real_iter(*args, **kwargs)

    sample = CpuSample()
    real_percent, real_wait = sample.process_percent, sample.wait
    monkeypatch.setattr(processes.psutil, "process_iter", process_iter)
    monkeypatch.setattr(sample, "wait", lambda *args: order.append("wait") or real_wait(*args))
    monkeypatch.setattr(sample, "process_percent", lambda pid: order.append("cpu") or real_percent(pid))
    facts = collect_processes(tmp_path, sample)
    assert order[:2] == ["table", "wait"] and set(order[2:]) == {"cpu"}, order[:5]
    assert facts["cpu_sample_seconds"] >= MIN_SAMPLE_SECONDS
    assert any(p["pid"] == os.getpid() and p["cpu_percent"] is not None for p in facts["top_cpu"] + facts["top_memory"])
