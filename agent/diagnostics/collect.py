"""Run the collectors of this PC in parallel under per-collector and global deadlines.

:func:`collect` always returns by ``options.deadline`` (plus a short grace):
collectors still running then are reported as ``timeout`` and abandoned on
daemon threads (their commands are killed at the deadline and their context
refuses further writes); a collector that raises is reported as ``error``. One
failure never sinks the report.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.redaction import Redactor
from protocol.errors import InvalidInputError

from .collectors import Collector, collector_names, collectors_for
from .cpu_sample import CpuSample
from .context import CollectContext, CollectionClosed, CollectOptions, CommandRunner, current_platform, json_default
from .model import CollectionReport, CollectorResult, CollectorStatus

#: Worker threads; collectors mostly wait on commands, so a few more than cores is fine.
MAX_WORKERS = 8
#: How long past a deadline a collector may take to write its facts after its commands were killed.
GRACE_SECONDS = 0.5

Progress = Callable[[str, str], None]
#: How often a collection that may be cancelled looks whether it was.
CANCEL_POLL_SECONDS = 0.05


class CollectionCancelled(Exception):
    """The caller cancelled the collection (the person stopped the share): its contexts are closed."""


def collect(
    options: CollectOptions,
    out_dir: Path,
    *,
    platform: str | None = None,
    command_runner: CommandRunner | None = None,
    progress: Progress | None = None,
    collectors: Sequence[Collector] | None = None,
    which: Callable[[str], str | None] | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    redactor: Redactor | None = None,
    now: datetime | None = None,
    cpu_sample: CpuSample | None = None,
    on_result: Callable[[CollectorResult], None] | None = None,
    cancelled: threading.Event | None = None,
) -> CollectionReport:
    """Gather diagnostics into ``out_dir`` (created; must be empty) and return the report.

    ``progress(name, status)`` is called from the calling thread: ``running``
    when a collector starts, then its final status. ``collectors`` replaces the
    registry's list; ``command_runner``, ``which``, ``env`` and ``home`` replace
    the real ones (tests and recorded outputs). ``redactor`` (the one the bundle
    will be built with; secrets only if not given) redacts what collectors derive
    from raw text, such as normalised log lines. ``now`` (aware; default: the
    clock) is the time "the last hours" of logs and crash reports are measured
    back from. ``cpu_sample`` is the first CPU reading if the caller took one early
(the processes collector then waits only for the rest of its interval).
``on_result(result)`` is called from the calling thread, holding the
redactor's lock, for each collector that returned (its files are final), as
soon as it returns: the bundle scrubs them while slower collectors work. Once
``cancelled`` is set, it stops waiting for collectors within
:data:`CANCEL_POLL_SECONDS` and raises CollectionCancelled (no collector writes
after that). Raise InvalidInputError for an
    unknown category or a non-empty staging directory; never for a collector's
    failure.
    """
    started_at = datetime.now(timezone.utc)
    platform = platform or current_platform()
    known = collector_names() | {c.name for c in collectors or ()} | {c.category for c in collectors or ()}
    unknown = sorted(((options.categories or set()) | options.exclude) - known)
    if unknown:
        raise InvalidInputError(f"unknown diagnostics categories: {', '.join(unknown)}",
                                hint=f"choose from {', '.join(sorted(known))}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise InvalidInputError(f"the staging directory {out_dir} is not empty",
                                hint="collect into a new, empty directory")

    root = CollectContext(out_dir, platform, options, command_runner=command_runner, which=which, env=env, home=home,
                          redactor=redactor, now=now, cpu_sample=cpu_sample)
    chosen = list(collectors) if collectors is not None else collectors_for(platform)
    results: dict[str, CollectorResult] = {}
    jobs: list[Collector] = []
    for collector in chosen:
        reason = _skip_reason(collector, root)
        if reason:
            results[collector.name] = CollectorResult(collector.name, collector.category, CollectorStatus.SKIPPED,
                                                      error=reason)
            _notify(progress, collector.name, CollectorStatus.SKIPPED.value)
        else:
            jobs.append(collector)

    _run_parallel(jobs, root, results, progress, on_result, cancelled)
    return CollectionReport(
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        platform=platform,
        deadline=options.deadline,
        results=[results[c.name] for c in chosen if c.name in results],
    )


def run_collector(collector: Collector, ctx: CollectContext) -> CollectorResult:
    """Run one collector in ``ctx`` (a context made by :meth:`CollectContext.for_collector`) and return its result.

    Its facts are checked to be JSON and written to ``<category>/facts.json``;
    an exception becomes status ``error`` with the message. Never raises.
    """
    started = time.monotonic()
    status, facts, error = CollectorStatus.OK, {}, None
    try:
        returned = collector.collect(ctx)
        if not isinstance(returned, dict):
            raise TypeError(f"collect() returned {type(returned).__name__}, not a dict of facts")
        facts = json.loads(json.dumps(returned, default=json_default))
        ctx.write_json(f"{collector.category}/facts.json", facts, source=f"python:{collector.name}")
    except CollectionClosed as exc:
        status, error = CollectorStatus.TIMEOUT, str(exc)
    except Exception as exc:  # noqa: BLE001 - one collector's bug must not sink the bundle
        status, error = CollectorStatus.ERROR, f"{type(exc).__name__}: {exc}"
    items = ctx.close()
    return CollectorResult(collector.name, collector.category, status, time.monotonic() - started, items,
                           facts if status is CollectorStatus.OK else {}, error)


def _skip_reason(collector: Collector, root: CollectContext) -> str | None:
    options = root.options
    if collector.name in options.exclude or collector.category in options.exclude:
        return "excluded by options"
    if options.categories is not None and not {collector.name, collector.category} & options.categories:
        return "category not selected"
    try:
        if not collector.applies(root):
            return f"does not apply to this PC ({root.platform})"
    except Exception as exc:  # noqa: BLE001 - a broken applies() skips the collector, it does not stop the run
        return f"applies() failed: {type(exc).__name__}: {exc}"
    return None


def _run_parallel(jobs: list[Collector], root: CollectContext, results: dict[str, CollectorResult],
                  progress: Progress | None, on_result: Callable[[CollectorResult], None] | None = None,
                  cancelled: threading.Event | None = None) -> None:
    """Feed ``jobs`` to daemon worker threads and fill ``results`` until all end or the global deadline passes."""
    if not jobs:
        return
    work: queue.Queue[Collector | None] = queue.Queue()
    events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
    running: dict[str, tuple[Collector, CollectContext, float]] = {}
    lock = threading.Lock()

    stopped = threading.Event()  # the run is over (done, past its deadline or cancelled): start nothing more

    def worker() -> None:
        while (collector := work.get()) is not None:
            if root.remaining() <= 0 or stopped.is_set():
                continue  # the main thread reports never-started collectors
            ctx = root.for_collector(collector.category, collector.effective_timeout(root.options.collector_timeout),
                                     collector.forbidden_paths)
            with lock:
                if stopped.is_set():
                    ctx.close()
                    continue
                running[collector.name] = (collector, ctx, time.monotonic())
            events.put(("start", collector.name, None))
            events.put(("done", collector.name, run_collector(collector, ctx)))

    for collector in jobs:
        work.put(collector)
    for index in range(min(MAX_WORKERS, len(jobs))):
        work.put(None)
        threading.Thread(target=worker, name=f"diagnostics-{index}", daemon=True).start()

    pending = {collector.name: collector for collector in jobs}
    hard_stop = root.deadline + GRACE_SECONDS
    try:
        while pending:
            if len(pending) <= 1:
                root.last_one.set()
            with lock:
                deadlines = [ctx.deadline + GRACE_SECONDS for name, (_, ctx, _) in running.items() if name in pending]
            wake = min([hard_stop, *deadlines])
            if cancelled is not None:
                if cancelled.is_set():
                    raise CollectionCancelled("the collection was cancelled")
                wake = min(wake, time.monotonic() + CANCEL_POLL_SECONDS)
            try:
                kind, name, payload = events.get(timeout=max(0.0, wake - time.monotonic()))
                if name in pending:
                    if kind == "start":
                        _notify(progress, name, "running")
                    else:
                        results[name] = payload
                        del pending[name]
                        _notify(progress, name, payload.status.value)
                        if on_result is not None:
                            with root.redaction_lock:
                                on_result(payload)
            except queue.Empty:
                pass
            now = time.monotonic()
            with lock:
                overdue = [(name, entry) for name, entry in running.items()
                           if name in pending and (now >= entry[1].deadline + GRACE_SECONDS or now >= hard_stop)]
            for name, (collector, ctx, began) in overdue:
                results[name] = _timed_out(collector, ctx, now - began)
                del pending[name]
                _notify(progress, name, CollectorStatus.TIMEOUT.value)
            if now >= hard_stop:
                for name, collector in list(pending.items()):
                    results[name] = CollectorResult(name, collector.category, CollectorStatus.TIMEOUT,
                                                    error="did not start before the global deadline")
                    del pending[name]
                    _notify(progress, name, CollectorStatus.TIMEOUT.value)
    finally:
        # Whatever happened (even a failing progress callback), no late writes land in the staging dir.
        with lock:
            stopped.set()
            for _, ctx, _ in running.values():
                ctx.close()


def _timed_out(collector: Collector, ctx: CollectContext, duration: float) -> CollectorResult:
    items = ctx.close()
    budget = collector.effective_timeout(ctx.options.collector_timeout)
    return CollectorResult(
        collector.name, collector.category, CollectorStatus.TIMEOUT, duration, items,
        error=f"still running after {duration:.1f} s (own limit {budget:.0f} s, run deadline "
              f"{ctx.options.deadline:.0f} s); items gathered so far are kept",
    )


def _notify(progress: Progress | None, name: str, status: str) -> None:
    if progress is not None:
        progress(name, status)
