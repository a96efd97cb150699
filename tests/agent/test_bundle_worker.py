"""The share's redactor in a worker process (agent.bundle_worker): the same bundle as in one process, errors
told as they were raised, a worker that dies or is interrupted, and a share that never loads the redactor."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path

import pytest

from agent.bundle_worker import BundleWorker, WorkerStopped
from agent.diagnostics.context import SharedRedactor
from agent.share import ShareRequest, prepare
from protocol.errors import ExitStatus, HelplineError, InvalidInputError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="collects from this Linux PC")


@pytest.fixture
def worker():
    started = BundleWorker.start()
    assert started is not None
    yield started
    started.close()


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_a_bundle_made_in_the_worker_is_the_bundle_made_in_one_process(isolated) -> None:
    password = secrets.token_urlsafe(12)
    log = isolated / "app.log"
    log.write_text(f"connecting to the database\npassword={password}\nconnected\n")
    request = ShareRequest(what="printer", deadline=20, logs=[str(log)], exclude={"processes"})
    alone = prepare(request, work_root=isolated / "one")
    beside = prepare(request, work_root=isolated / "two", worker=BundleWorker.start())
    try:
        one, two = _members(alone.archive), _members(beside.archive)
        assert one.keys() == two.keys()
        assert not any(password.encode() in body for body in two.values())
        app_logs = [name for name in two if name.endswith("app.log")]
        assert app_logs and b"connected" in two[app_logs[0]]
        items = {i["path"]: i["redaction"] for i in json.loads(two["manifest.json"])["items"]}
        assert items == {i["path"]: i["redaction"] for i in json.loads(one["manifest.json"])["items"]}
        assert beside.bundle.preview and [p.category for p in beside.bundle.preview] == [
            p.category for p in alone.bundle.preview]
    finally:
        alone.discard()
        beside.discard()


def test_an_error_in_the_worker_is_raised_in_the_share_as_it_was_raised(worker) -> None:
    worker.post("make", {})
    with pytest.raises(ValueError, match="no method 'redact_tree'"):
        worker.call("redactor", "redact_tree", ("/",))  # the share may ask only for what it needs
    with pytest.raises(TypeError):
        worker.call("redactor", "redact_text", ())
    assert worker.call("redactor", "redact_text", ("plain words",)) == ("plain words", {}), "it goes on after errors"


def test_a_helpline_error_keeps_its_hint_and_status_across_the_pipe() -> None:
    import pickle

    from agent.bundle_worker import _portable, _rebuilt

    sent = InvalidInputError("the staging directory is not empty", hint="collect into a new, empty directory")
    got = _rebuilt(pickle.loads(pickle.dumps(_portable(sent))))
    assert type(got) is InvalidInputError and got.message == sent.message
    assert got.hint == sent.hint and got.status == ExitStatus.INVALID

    class Unpicklable(Exception):
        def __init__(self):
            super().__init__("odd")
            self.lock = threading.Lock()

    told = _rebuilt(pickle.loads(pickle.dumps(_portable(Unpicklable()))))
    assert isinstance(told, RuntimeError) and "Unpicklable: odd" in str(told)


def test_a_redactor_that_could_not_be_made_is_the_error_of_every_call_after(worker) -> None:
    worker.post("make", {"no_such_option": True})
    for _ in range(2):
        with pytest.raises(TypeError, match="no_such_option"):
            worker.call("redactor", "redact_text", ("x",))


def test_a_worker_that_dies_is_a_one_line_error_and_its_share_leaves_nothing(isolated) -> None:
    dying = BundleWorker.start()
    os.kill(dying.pid, signal.SIGKILL)
    with pytest.raises(WorkerStopped) as raised:
        prepare(ShareRequest(deadline=20, exclude={"processes"}), work_root=isolated / "work", worker=dying)
    assert "\n" not in raised.value.message and "exit status" in raised.value.message
    assert isinstance(raised.value, HelplineError)
    assert list((isolated / "work").iterdir()) == []
    with pytest.raises(WorkerStopped):
        dying.call("redactor", "redact_text", ("again",))


def test_the_worker_ignores_ctrl_c_and_ends_with_its_input(worker) -> None:
    key = "sk-ant-api03-" + secrets.token_urlsafe(60)
    worker.post("make", {})
    assert worker.call("redactor", "redact_text", ("x",))[0] == "x"  # loaded: past the start-up
    os.kill(worker.pid, signal.SIGINT)
    redacted, counts = worker.call("redactor", "redact_text", (f"key {key}",))
    assert key not in redacted and counts
    worker.close()
    assert worker._process.returncode == 0


def test_a_share_with_a_worker_never_loads_the_redactor_itself(isolated) -> None:
    program = textwrap.dedent("""
        import sys
        from pathlib import Path
        from agent.bundle_worker import BundleWorker
        from agent.share import ShareRequest, prepare
        prepared = prepare(ShareRequest(deadline=20, exclude={"processes"}), work_root=Path(sys.argv[1]),
                           worker=BundleWorker.start())
        assert prepared.archive.is_file()
        print(sorted(m for m in sys.modules if m.startswith("agent.redaction")))
        prepared.discard()
    """)
    done = subprocess.run([sys.executable, "-c", program, str(isolated / "work")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HELPLINE_CONFIG_DIR": str(isolated / "config")})
    assert done.returncode == 0, done.stderr
    # What the bundle's code names of the redactor (its outcomes, its text files), not the redactor itself.
    assert done.stdout.strip() == "['agent.redaction', 'agent.redaction.outcomes', 'agent.redaction.textfiles']"


def test_a_collection_calls_a_redactor_function_once_and_only_when_a_value_is_derived() -> None:
    calls = []
    made = threading.Event()

    class Fake:
        def redact_text(self, text):
            return text.upper(), {}

    def ready():
        calls.append(1)
        made.set()
        return Fake()

    shared = SharedRedactor(ready)
    assert calls == []
    threads = [threading.Thread(target=shared) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert calls == [1] and isinstance(shared(), Fake)
    assert SharedRedactor(shared()).__call__() is shared(), "a redactor is used as it is"


def test_a_worker_never_asked_anything_is_stopped_at_once() -> None:
    idle = BundleWorker.start()
    idle.close()
    assert idle._process.returncode == -signal.SIGTERM, "stopped, not waited for while it loads"
    idle.close()  # twice is harmless
