"""The agent service's loop: a pass runs the due work, a stop ends it (and the channel), a bad policy is refused."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.service.run import AgentService, agent_service
from agent.snapshots import restic as R
from agent.snapshots.jobs import Snapshots
from agent.snapshots.policy import policy_from_config
from agent.store import AgentStore
from protocol.errors import ConfigError

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")
T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def snapshots_for(tmp_path: Path, policy=None) -> Snapshots:
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "a.txt").write_text("a\n" * 100)
    policy = policy or policy_from_config({"snapshots": {"paths": [str(home)], "server": False,
                                                         "free_space_margin": 0}}, home=home, data_dir=tmp_path)
    return Snapshots(AgentStore(tmp_path / "agent"), policy=policy, restic=R.detect("restic"), clock=lambda: T0,
                     host="pc-test", battery=lambda: False)


def test_once_runs_the_due_work_and_tells_each_piece(tmp_path):
    events = []
    service = AgentService(snapshots_for(tmp_path), on_event=events.append)
    service.serve(once=True)
    kinds = [event.work.kind for event in events if event.work is not None]
    assert kinds == ["snapshot", "forget", "prune", "check", "verify"]
    assert all(event.ok for event in events) and events[0].at == T0
    events.clear()
    service.stop.clear()
    service.serve(once=True)
    assert events == []  # the clock did not move: nothing is due


def test_a_stop_ends_the_loop_and_the_channel_it_started(tmp_path):
    stop = threading.Event()
    channel_saw_stop = threading.Event()

    def channel(stop_event: threading.Event) -> None:
        stop_event.wait(30)
        channel_saw_stop.set()

    def on_event(event) -> None:
        if event.work is not None and event.work.kind == "verify":
            stop.set()  # as SIGTERM would, once the first pass is done

    service = AgentService(snapshots_for(tmp_path), stop=stop, on_event=on_event, channel=channel, max_sleep=30)
    runner = threading.Thread(target=service.serve)
    runner.start()
    runner.join(timeout=120)
    assert not runner.is_alive() and channel_saw_stop.is_set()


def test_an_unlinked_pc_has_no_request_channel_and_a_bad_policy_is_refused_before_anything_runs(tmp_path):
    snapshots = snapshots_for(tmp_path)
    assert agent_service(snapshots, stop=threading.Event()).channel is None
    broken = Snapshots(AgentStore(tmp_path / "other"), restic=R.detect("restic"))
    config = tmp_path / "agent.toml"
    config.write_text('[snapshots]\ninterval = "often"\n')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HELPLINE_AGENT_CONFIG", str(config))
        patch.setattr("agent.config.SYSTEM_CONFIG", tmp_path / "none.toml")
        patch.setenv("HELPLINE_CONFIG_DIR", str(tmp_path / "config"))
        with pytest.raises(ConfigError, match="interval"):
            AgentService(broken).serve(once=True)
    assert not (tmp_path / "other" / "snapshots" / "state.json").exists()
