"""The registry of diagnostics collectors: one collector per module, one instance each here."""

from __future__ import annotations

from agent.regexes import AGENT_CACHE

from .base import Collector
from .clock import ClockCollector
from .crashes import CrashesCollector
from .devices import DevicesCollector
from .display import DisplayCollector
from .environment import EnvironmentCollector
from .hardware import HardwareCollector
from .kernel import KernelCollector
from .logs import LogsCollector
from .netconfig import NetConfigCollector
from .network import NetworkCollector
from .printers import PrintersCollector
from .processes import ProcessesCollector
from .services import ServicesCollector
from .software import SoftwareCollector
from .storage import StorageCollector
from .system import SystemCollector
from .updates import UpdatesCollector

#: Every collector, in the order reports list them.
ALL_COLLECTORS: tuple[Collector, ...] = (
    SystemCollector(),
    HardwareCollector(),
    DevicesCollector(),
    StorageCollector(),
    NetworkCollector(),
    NetConfigCollector(),
    ProcessesCollector(),
    ServicesCollector(),
    SoftwareCollector(),
    UpdatesCollector(),
    LogsCollector(),
    KernelCollector(),
    CrashesCollector(),
    PrintersCollector(),
    ClockCollector(),
    DisplayCollector(),
    EnvironmentCollector(),
)


def collectors_for(platform: str) -> list[Collector]:
    """Return the registered collectors that support ``platform`` (``linux``, ``windows`` or ``darwin``)."""
    return [collector for collector in ALL_COLLECTORS if platform in collector.platforms]


def collector_names() -> set[str]:
    """Return every collector name and category, which is what options may select or exclude."""
    return {collector.name for collector in ALL_COLLECTORS} | {collector.category for collector in ALL_COLLECTORS}


__all__ = ["ALL_COLLECTORS", "Collector", "collectors_for", "collector_names"]

AGENT_CACHE.save()  # the collectors' patterns, for the next start (see agent.regexes)
