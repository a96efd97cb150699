"""The agent service's local socket: who the caller is (from the kernel), what each caller may see and do, and the
bounds on every connection. No Helpline server is needed: every refusal here happens before the service would
ask one."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.other_user import as_user

from agent.local import ThisPC, this_pc
from agent.service import wire
from agent.service.localapi import LocalAPI, LocalServer, TicketOwners
from agent.service.socketpc import ServicePC
from agent.snapshots import restic as R
from agent.snapshots.jobs import Snapshots
from agent.snapshots.policy import policy_from_config
from agent.store import AgentState, AgentStore
from protocol.errors import ConfigError, ForbiddenError, InvalidInputError, NotFoundError, TooLargeError, UnavailableError

USER, OTHER = 65534, 65533  # two unprivileged uids (the first is "nobody")


@pytest.fixture(autouse=True)
def _own_data_folder(tmp_path, monkeypatch):
    """The socket client's per-user folder is the test's, never the real user's (agent_dir() reads these)."""
    monkeypatch.delenv("HELPLINE_AGENT_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


@pytest.fixture
def short_dir():
    """A folder with a short path (socket paths are limited to ~100 bytes) that other uids may traverse."""
    path = Path(tempfile.mkdtemp(prefix="hl-sock-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service_store(short_dir) -> AgentStore:
    """The service's identity, linked to a server nobody needs to reach, with tickets of two users and root's."""
    store = AgentStore(short_dir / "state")
    store.save(AgentState(server_url="http://127.0.0.1:9", agent_id="svc", credential="hla_secret",
                          server_public_key="k", enrolled=True, tickets=["T-1001", "T-1002", "T-1003"]))
    owners = TicketOwners(store.directory)
    owners.record("T-1001", USER)
    owners.record("T-1002", OTHER)
    owners.record("T-1003", 0)
    return store


@pytest.fixture
def served(service_store, short_dir):
    server = LocalServer(LocalAPI(service_store), short_dir / "run" / "agent.sock").start()
    yield server
    server.stop()


def test_the_peer_is_the_kernels_answer(served):
    seen = {}
    api = served.api
    real_call = api.call

    def spy(peer, op, args, fd=None, progress=None):
        seen["peer"] = peer
        return real_call(peer, op, args, fd, progress)

    api.call = spy
    ServicePC(served.path).link()
    assert seen["peer"].uid == os.geteuid() and seen["peer"].pid == os.getpid()


def test_socket_and_folder_modes(served):
    assert served.path.stat().st_mode & 0o777 == 0o666
    assert served.path.parent.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("uid, visible", [(USER, ["T-1001"]), (OTHER, ["T-1002"]), (0, ["T-1001", "T-1002", "T-1003"]),
                                          (4242, [])], ids=["user", "other-user", "root", "stranger"])
def test_each_caller_sees_their_own_tickets_and_root_all(service_store, uid, visible):
    shown = LocalAPI(service_store).call(wire.Peer(uid=uid, gid=uid), "link", {})
    assert shown["tickets"] == visible
    assert shown["credential"] == ""  # the PC's credential never leaves the service


@pytest.mark.parametrize("op, args", [
    ("tickets", {"reference": "T-1002"}),
    ("reply", {"ticket": "T-1002", "message": "hello"}),
    ("deliver", {"ticket": "T-1002", "size": 1, "sha256": "00"}),
    ("tickets", {"reference": "T-9999"}),
], ids=["status", "reply", "deliver", "unlinked"])
def test_a_user_cannot_act_on_another_users_ticket(service_store, op, args):
    with pytest.raises(NotFoundError, match="not one of your tickets"):
        LocalAPI(service_store).call(wire.Peer(uid=USER, gid=USER), op, args)


def test_only_root_enrolls_and_users_cannot_move_the_pc(service_store):
    api = LocalAPI(service_store)
    with pytest.raises(ForbiddenError, match="administrator"):
        api.call(wire.Peer(uid=USER, gid=USER), "enroll", {"server_url": "http://127.0.0.1:9", "token": "t"})
    with pytest.raises(ForbiddenError, match="linked to http://127.0.0.1:9"):
        api.call(wire.Peer(uid=USER, gid=USER), "pair", {"code": "ABCD-EFGH", "server_url": "http://127.0.0.1:8"})


def test_users_cannot_link_an_unenrolled_service(short_dir):
    api = LocalAPI(AgentStore(short_dir / "empty"))
    with pytest.raises(ConfigError, match="not linked to a Helpline server"):
        api.call(wire.Peer(uid=USER, gid=USER), "request_help", {"title": "help", "server_url": "http://127.0.0.1:9"})


def test_unknown_calls_and_bad_lines_are_refused(served):
    with pytest.raises(InvalidInputError, match="does not serve 'read_key'"):
        ServicePC(served.path).call("read_key")
    answer = _raw(served.path, b"not json\n")
    assert answer["ok"] is False and "not JSON" in answer["error"]["message"]
    answer = _raw(served.path, b'{"op": 1}\n')
    assert answer["ok"] is False and answer["error"]["kind"] == "InvalidInputError"


def _raw(path: Path, data: bytes, *, fds: list[int] | None = None) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        if fds:
            socket.send_fds(sock, [data], fds)
        else:
            sock.sendall(data)
        return wire.LineReader(sock).read(30)


def test_an_oversized_request_is_refused(short_dir, service_store):
    with LocalServer(LocalAPI(service_store), short_dir / "small.sock", max_bytes=1024) as server:
        answer = _raw(server.path, b'{"op": "link", "args": {"pad": "' + b"x" * 70_000 + b'"}}\n')
    assert answer["error"]["kind"] == "TooLargeError"
    with pytest.raises(TooLargeError):  # and the client will not even send one over the wire's bound
        wire.send_line(socket.socket(socket.AF_UNIX), {"pad": "x" * wire.MAX_MESSAGE_BYTES})


def test_a_caller_that_sends_nothing_is_let_go(short_dir, service_store):
    with LocalServer(LocalAPI(service_store), short_dir / "slow.sock", read_timeout=0.2) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(server.path))
            sock.sendall(b'{"op": "li')  # and never the rest
            answer = wire.LineReader(sock).read(30)
    assert answer["error"]["kind"] == "UnavailableError" and "in time" in answer["error"]["message"]


def test_connections_are_bounded_in_number(short_dir, service_store):
    with LocalServer(LocalAPI(service_store), short_dir / "busy.sock", max_connections=1) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as holder:
            holder.connect(str(server.path))  # holds the one slot, sending nothing
            with pytest.raises(UnavailableError, match="busy"):
                ServicePC(server.path).link()
        # once it leaves (its thread sees the end), calls are served again (bounded in count and time)
        until, served_again = time.monotonic() + 30, None
        for _ in range(3000):
            try:
                served_again = ServicePC(server.path).link()
                break
            except UnavailableError:
                if time.monotonic() > until:
                    break
                time.sleep(0.01)
        assert served_again is not None and served_again.agent_id == "svc", "the slot was never given back"


def test_a_request_carries_at_most_one_file(served, short_dir):
    paths = [short_dir / "a", short_dir / "b"]
    fds = []
    for p in paths:
        p.write_bytes(b"x")
        fds.append(os.open(p, os.O_RDONLY))
    try:
        answer = _raw(served.path, b'{"op": "link"}\n', fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert answer["ok"] is False and "at most 1 file" in answer["error"]["message"]


def test_a_second_service_on_the_same_socket_is_refused(served):
    with pytest.raises(ConfigError, match="Another agent service"):
        LocalServer(served.api, served.path).start()


def test_a_stale_socket_is_replaced(short_dir, service_store):
    path = short_dir / "stale.sock"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(str(path))
    old.close()  # a service that died: the file stays, nobody listens
    with LocalServer(LocalAPI(service_store), path) as server:
        assert ServicePC(server.path).link().agent_id == "svc"
    assert not path.exists()


def test_this_pc_takes_the_socket_when_it_is_there(served, monkeypatch, tmp_path):
    monkeypatch.delenv("HELPLINE_AGENT_DIR", raising=False)
    monkeypatch.setenv(wire.SOCKET_ENV, str(served.path))
    assert isinstance(this_pc(), ServicePC)
    monkeypatch.setenv("HELPLINE_AGENT_DIR", str(tmp_path / "own"))  # forces the in-process identity
    assert isinstance(this_pc(), ThisPC)
    monkeypatch.delenv("HELPLINE_AGENT_DIR")
    monkeypatch.setenv(wire.SOCKET_ENV, str(tmp_path / "no.sock"))
    assert isinstance(this_pc(), ThisPC)


def test_a_session_is_offered_only_on_the_users_own_ticket(served):
    with pytest.raises(ConfigError, match="not linked to T-1009 for you"):
        ServicePC(served.path).session_offer("T-1009")


def test_a_user_answers_only_requests_on_their_own_tickets(service_store):
    from datetime import UTC, datetime, timedelta

    from agent.service.consent import WaitingRequest

    folder = service_store.directory / "requests" / "waiting"
    folder.mkdir(parents=True)
    now = datetime.now(UTC)
    ids = {"T-1001": "aaaa1111-0000-0000-0000-000000000001", "T-1002": "bbbb2222-0000-0000-0000-000000000002",
           None: "cccc3333-0000-0000-0000-000000000003"}
    for ticket, request_id in ids.items():
        item = WaitingRequest(request_id, "restore", "Alice", "alice", ticket, {"path": "/home/x"}, now, now + timedelta(hours=1))
        (folder / f"{request_id}.json").write_text(json.dumps(item.to_json()))
    api = LocalAPI(service_store)
    user, root = wire.Peer(uid=USER, gid=USER), wire.Peer(uid=0, gid=0)
    assert [w["ticket"] for w in api.call(user, "requests_waiting", {})] == ["T-1001"]
    assert len(api.call(root, "requests_waiting", {})) == 3
    with pytest.raises(NotFoundError):
        api.call(user, "requests_answer", {"reference": ids["T-1002"][:8], "approve": True})
    answered = api.call(user, "requests_answer", {"reference": ids["T-1001"][:8], "approve": True})
    assert answered["id"] == ids["T-1001"]
    assert json.loads((service_store.directory / "requests" / "answers" / f"{ids['T-1001']}.json").read_text())["by"] == _name(USER)
    assert [w["ticket"] for w in api.call(root, "requests_waiting", {})] == ["T-1002", None]


def test_a_user_without_a_home_of_their_own_gets_no_snapshots(service_store):
    api = LocalAPI(service_store)
    for op in ("snapshot_now", "snapshot_list", "snapshot_status"):
        with pytest.raises(ConfigError, match="missing or not yours"):
            api.call(wire.Peer(uid=USER, gid=USER), op, {})  # nobody's home is /nonexistent
    with pytest.raises(InvalidInputError, match="local or server"):
        api.call(wire.Peer(uid=0, gid=0), "snapshot_list", {"repository": "elsewhere"})


def test_without_the_service_the_socket_client_says_so_in_one_line(short_dir):
    with pytest.raises(UnavailableError, match="not answering"):
        ServicePC(short_dir / "gone.sock").link()


# -- real other uids: a child process that becomes another user, then calls (CI runs as root) ---------------------


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to call as other uids")
def test_other_uids_over_the_real_socket(served):
    path = served.path
    assert as_user(USER, lambda: ServicePC(path, Path("/nonexistent")).link().tickets) == {"ok": ["T-1001"]}
    assert as_user(OTHER, lambda: ServicePC(path, Path("/nonexistent")).link().tickets) == {"ok": ["T-1002"]}
    refused = as_user(USER, lambda: ServicePC(path, Path("/nonexistent")).tickets("T-1002"))
    assert refused["error"] == "NotFoundError" and "not one of your tickets" in refused["message"]
    assert ServicePC(path).link().tickets == ["T-1001", "T-1002", "T-1003"]  # root, in this process
    # A user cannot use the service's own state folder directly either: it is the service's, 0700.
    assert as_user(USER, lambda: sorted(os.listdir(served.api.store.directory)))["error"] == "PermissionError"


@pytest.fixture
def test_user(short_dir):
    """A real OS user made for the test (root only), with a home of their own holding two files."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to make a user")
    name = f"hlt{os.getpid() % 100000}"
    home = short_dir / "home" / name
    done = subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/usr/sbin/nologin", "-U", name],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    try:
        entry = pwd.getpwnam(name)
        (home / "Documents").mkdir(parents=True)
        (home / "Documents" / "letter.txt").write_text("Dear Ann,\n" * 50)
        (home / "photo.bin").write_bytes(os.urandom(20_000))
        for path in (home.parent, home, home / "Documents", home / "Documents" / "letter.txt", home / "photo.bin"):
            if path != home.parent:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        home.parent.chmod(0o755)
        home.chmod(0o700)
        yield entry
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


def test_a_user_snapshots_and_lists_their_own_home_through_the_service(short_dir, service_store, test_user):
    others = short_dir / "other-files"
    others.mkdir()
    (others / "root-only.txt").write_text("not for users\n")
    policy = policy_from_config({"snapshots": {"paths": [str(others)], "server": False, "free_space_margin": 0}},
                                home=short_dir, data_dir=service_store.directory)
    snapshots = Snapshots(service_store, policy=policy)
    home = test_user.pw_dir
    with LocalServer(LocalAPI(service_store, snapshots=snapshots), short_dir / "snap.sock") as server:
        path = server.path

        def snapshot_now():
            [run] = ServicePC(path, Path("/nonexistent")).snapshots().run_snapshot()
            return {"status": run.status, "files_new": run.summary.files_new}

        def status():
            return ServicePC(path, Path("/nonexistent")).snapshots().protection().state

        ServicePC(path).snapshots().run_snapshot()  # root's: the policy's paths, which hold no home
        assert ServicePC(path).snapshots().protection().state == "unverified"  # the PC (root's view) has one
        assert as_user(test_user.pw_uid, status) == {"ok": "never"}  # but nothing of this user's home is kept yet
        assert as_user(test_user.pw_uid, snapshot_now) == {"ok": {"status": "ok", "files_new": 2}}

        def listed():
            return [list(s.paths) for s in ServicePC(path, Path("/nonexistent")).snapshots().list_snapshots()]

        assert as_user(test_user.pw_uid, listed) == {"ok": [[home]]}  # not root's snapshot of other files
        assert sorted(map(list, (s.paths for s in ServicePC(path).snapshots().list_snapshots()))) == \
            sorted([[home], [str(others)]])
        refused = as_user(USER, listed)  # nobody has no home of their own
        assert refused["error"] == "ConfigError"
        assert as_user(test_user.pw_uid, status)["ok"] in {"unverified", "protected"}
    # The snapshot is the service's: the user cannot read its repository.
    assert as_user(test_user.pw_uid, lambda: os.listdir(service_store.directory))["error"] == "PermissionError"


def test_a_users_restore_comes_back_as_theirs_placed_by_their_own_rights(short_dir, service_store, test_user,
                                                                         monkeypatch):
    policy = policy_from_config({"snapshots": {"paths": [str(short_dir / "nothing")], "server": False,
                                               "free_space_margin": 0}}, home=short_dir, data_dir=service_store.directory)
    snapshots = Snapshots(service_store, policy=policy)
    home = Path(test_user.pw_dir)
    letter, photo = home / "Documents" / "letter.txt", home / "photo.bin"
    original_letter, original_photo = letter.read_bytes(), photo.read_bytes()
    with LocalServer(LocalAPI(service_store, snapshots=snapshots), short_dir / "rest.sock") as server:
        path = server.path

        def mine():
            return ServicePC(path, Path("/nonexistent")).snapshots()

        assert as_user(test_user.pw_uid, lambda: mine().run_snapshot()[0].status) == {"ok": "ok"}
        letter.unlink()
        photo.write_bytes(b"ransomware was here")
        listed = []
        real_snapshots = R.snapshots
        monkeypatch.setattr(R, "snapshots", lambda *a, **k: listed.append(1) or real_snapshots(*a, **k))

        beside = as_user(test_user.pw_uid, lambda: str(mine().restore(letter).placed_at))["ok"]
        assert listed == [], "the latest snapshot of the user's file comes from the service's records, not a listing"
        assert Path(beside).parent == letter.parent and Path(beside).name.startswith("letter.txt.restored-")
        assert Path(beside).read_bytes() == original_letter
        assert os.stat(beside).st_uid == test_user.pw_uid and os.stat(beside).st_gid == test_user.pw_gid

        def overwrite():
            done = mine().restore(photo, overwrite=True)
            return [str(done.placed_at), str(done.kept_at)]

        placed, kept = as_user(test_user.pw_uid, overwrite)["ok"]
        assert placed == str(photo) and photo.read_bytes() == original_photo
        assert Path(kept).read_bytes() == b"ransomware was here"
        assert os.stat(photo).st_uid == test_user.pw_uid

        # Only into their own home.
        outside = as_user(test_user.pw_uid, lambda: mine().restore("/etc/passwd"))
        assert outside["error"] == "ForbiddenError" and "own home only" in outside["message"]
        into = as_user(test_user.pw_uid, lambda: mine().restore(photo, to=short_dir))
        assert into["error"] == "ForbiddenError"
        # A link the user planted in their home cannot make the service write where the user may not.
        guarded = short_dir / "root-only"
        guarded.mkdir()
        guarded.chmod(0o755)
        shutil.move(str(home / "Documents"), str(home / "Documents.moved"))
        (home / "Documents").symlink_to(guarded)
        planted = as_user(test_user.pw_uid, lambda: mine().restore(letter))
        assert planted["error"] == "HelplineError" and "Could not put the restored copy" in planted["message"]
        assert list(guarded.iterdir()) == []
    # Staging folders are gone, and they were never in the user's home.
    assert [p for p in LocalAPI(service_store).restore_area().iterdir()] == []


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def test_a_bundle_is_a_readable_regular_file_of_the_size_announced(service_store, short_dir):
    api, peer = LocalAPI(service_store), wire.Peer(uid=USER, gid=USER)
    bundle = short_dir / "bundle.tar.gz"
    bundle.write_bytes(b"x" * 100)
    for opened, size, expected in [(os.O_RDONLY, 99, "size announced"), (os.O_WRONLY, 100, "cannot be read")]:
        fd = os.open(bundle, opened)
        try:
            with pytest.raises(InvalidInputError, match=expected):
                api._copy_in(fd, size) if expected == "cannot be read" else \
                    api.call(peer, "deliver", {"ticket": "T-1001", "size": size, "sha256": "0" * 64}, fd)
        finally:
            os.close(fd)
    with pytest.raises(InvalidInputError, match="none came"):
        api.call(peer, "deliver", {"ticket": "T-1001", "size": 100, "sha256": "0" * 64})
    assert not list((service_store.directory / "incoming").iterdir())  # nothing left behind


def test_an_earlier_identity_on_another_server_stays_as_it_is(served, tmp_path):
    user_dir = tmp_path / "mine"
    AgentStore(user_dir).save(AgentState(server_url="http://127.0.0.1:8", agent_id="old", credential="",
                                         server_public_key="k", tickets=["T-7"]))
    pc = ServicePC(served.path, user_dir)
    assert pc.offer_old_identity() == []
    assert (user_dir / "agent.json").exists() and not (user_dir / "retired").exists()


def test_a_refused_hand_over_is_noted_once_and_commands_go_on(served, tmp_path, monkeypatch):
    user_dir = tmp_path / "mine"
    AgentStore(user_dir).save(AgentState(server_url="http://127.0.0.1:9", agent_id="old", credential="",
                                         server_public_key="k", tickets=["T-7"]))
    calls = []

    def refuse(peer, args, fd, progress):
        calls.append(args)
        raise ForbiddenError("The hand-over statement is not signed by the agent it names.")

    served.api.ops["hand_over"] = refuse
    pc = ServicePC(served.path, user_dir)
    assert pc.link().agent_id == "svc"  # the command itself goes on
    assert calls and calls[0]["tickets"] == ["T-7"] and calls[0]["from_agent_id"] == "old"
    assert "not signed" in (user_dir / "hand-over-refused.txt").read_text()
    ServicePC(served.path, user_dir).link()
    assert len(calls) == 1  # not tried again
