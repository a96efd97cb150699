"""The relay client: the token goes in a header, bytes pass both ways whole and in order, close codes
become Helpline errors, and the socket bridge ends when either end does.

The far end is a small WebSocket server on loopback (websockets' own), standing in
for the server's relay; the real relay is tested in tests/server/test_relay_live.py.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from websockets.sync.server import ServerConnection, serve

from agent.relay_socket import RelayClosed, open_relay
from protocol.errors import ConfigError, ExitStatus, UnavailableError
from protocol.sessions import RELAY_BAD_TOKEN, RELAY_SIDE_TAKEN, RelayTicket

TIMEOUT = 10.0


@contextmanager
def far_end(handler: Callable[[ServerConnection], None]) -> Iterator[tuple[str, list[dict]]]:
    """A WebSocket server on a free loopback port running ``handler``; yields (ws URL, headers seen)."""
    seen: list[dict] = []

    def handle(connection: ServerConnection) -> None:
        seen.append({"path": connection.request.path, "Authorization": connection.request.headers.get("Authorization")})
        handler(connection)

    with serve(handle, "127.0.0.1", 0, compression=None, max_size=8 << 20) as server:
        port = server.socket.getsockname()[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{port}/v1/relay", seen
        finally:
            server.shutdown()
            thread.join(TIMEOUT)


def ticket(url: str, token: str = "hlr_secret-token") -> RelayTicket:
    return RelayTicket(url=url, token=token, expires_at=datetime(2030, 1, 1, tzinfo=UTC))


def echo(connection: ServerConnection) -> None:
    for message in connection:
        connection.send(message)


def test_the_token_goes_in_the_authorization_header_and_never_in_the_url():
    with far_end(echo) as (url, seen), open_relay(ticket(url)) as stream:
        stream.send(b"ping")
        assert stream.recv() == b"ping"
    assert seen[0]["Authorization"] == "Bearer hlr_secret-token"
    assert "hlr_secret" not in seen[0]["path"]


def test_recv_splits_a_big_frame_without_losing_bytes():
    data = os.urandom(300_000)
    with far_end(echo) as (url, _), open_relay(ticket(url)) as stream:
        stream.send(data)
        got = bytearray()
        for _ in range(100):
            got += stream.recv(64 << 10)
            if len(got) >= len(data):
                break
        assert bytes(got) == data
        assert stream.sent == stream.received == len(data)


@pytest.mark.parametrize(("code", "status"), [(RELAY_BAD_TOKEN, ExitStatus.AUTH), (RELAY_SIDE_TAKEN, ExitStatus.CONFLICT)],
                         ids=["bad-token", "side-taken"])
def test_a_refusal_by_the_relay_is_an_error_with_its_status(code, status):
    def refuse(connection: ServerConnection) -> None:
        connection.close(code, "refused")

    with far_end(refuse) as (url, _), open_relay(ticket(url)) as stream:
        with pytest.raises(RelayClosed) as caught:
            stream.recv()
    assert caught.value.code == code and caught.value.status == status


def test_a_normal_close_is_the_end_of_the_stream():
    def say_bye(connection: ServerConnection) -> None:
        connection.send(b"bye")
        connection.close()

    with far_end(say_bye) as (url, _), open_relay(ticket(url)) as stream:
        assert stream.recv() == b"bye"
        assert stream.recv() == b""


def test_the_bridge_carries_bytes_both_ways_in_order():
    chunks = [os.urandom(n) for n in (1, 1000, 70_000, 1 << 20, 5)]
    with far_end(echo) as (url, _):
        stream = open_relay(ticket(url))
        sock = stream.bridge_to_socket()
        sock.settimeout(TIMEOUT)
        expected = hashlib.sha256(b"".join(chunks)).hexdigest()
        total = sum(map(len, chunks))

        def writer() -> None:
            for chunk in chunks:
                sock.sendall(chunk)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        got = bytearray()
        for _ in range(10_000):
            if len(got) >= total:
                break
            got += sock.recv(1 << 16)
        thread.join(TIMEOUT)
        assert hashlib.sha256(got).hexdigest() == expected
        sock.close()


def test_the_far_end_closing_ends_the_bridged_socket():
    def close_after_one(connection: ServerConnection) -> None:
        connection.send(connection.recv())
        connection.close()

    with far_end(close_after_one) as (url, _):
        sock = open_relay(ticket(url)).bridge_to_socket()
        sock.settimeout(TIMEOUT)
        sock.sendall(b"hello")
        assert sock.recv(100) == b"hello"
        assert sock.recv(100) == b""  # end of file, not a hang
        sock.close()


def test_closing_the_bridged_socket_closes_the_relay_side():
    closed = threading.Event()

    def wait_for_close(connection: ServerConnection) -> None:
        for _ in connection:
            pass
        closed.set()

    with far_end(wait_for_close) as (url, _):
        sock = open_relay(ticket(url)).bridge_to_socket()
        sock.sendall(b"x")
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        assert closed.wait(TIMEOUT)


def test_an_unreachable_relay_is_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UnavailableError):
        open_relay(ticket(f"ws://127.0.0.1:{port}/v1/relay"), open_timeout=5)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/v1/relay", "ws://relay.example.com/v1/relay", "file:///x"],
                         ids=["http-scheme", "plain-ws-off-loopback", "file"])
def test_a_relay_address_that_would_leak_the_token_is_refused(url, monkeypatch):
    monkeypatch.delenv("HELPLINE_INSECURE_HTTP", raising=False)
    with pytest.raises(ConfigError):
        open_relay(ticket(url))


def test_a_closed_stream_refuses_to_send_instead_of_hanging():
    with far_end(echo) as (url, _):
        stream = open_relay(ticket(url))
        stream.close()
        stream._loop.thread.join(TIMEOUT)
        with pytest.raises(RelayClosed):
            stream.send(b"late")


def test_a_send_larger_than_a_frame_goes_as_several():
    from agent.relay_socket import MAX_FRAME

    data = os.urandom(MAX_FRAME + 1000)
    with far_end(echo) as (url, _), open_relay(ticket(url)) as stream:
        stream.send(data)
        assert len(stream.recv_frame()) == MAX_FRAME
        assert stream.recv_frame() == data[MAX_FRAME:]


def test_the_relay_goes_through_the_configured_proxy(tmp_path, monkeypatch):
    from tests.support.forward_proxy import ForwardProxy

    proxy = ForwardProxy(timeout=TIMEOUT).start()
    try:
        config = tmp_path / "agent.toml"
        config.write_text(f'[server]\nproxy = "{proxy.url}"\n')
        monkeypatch.setattr("agent.config.SYSTEM_CONFIG", tmp_path / "absent.toml")
        monkeypatch.setenv("HELPLINE_CONFIG_DIR", str(tmp_path / "config"))
        monkeypatch.setenv("HELPLINE_AGENT_CONFIG", str(config))
        with far_end(echo) as (url, seen), open_relay(ticket(url)) as stream:
            stream.send(b"through the proxy")
            assert stream.recv() == b"through the proxy"
        port = url.split(":")[2].split("/")[0]
        assert proxy.seen == [f"CONNECT 127.0.0.1:{port}"]  # a tunnel: the proxy sees the address, not the token
        assert seen[0]["Authorization"] == "Bearer hlr_secret-token"
    finally:
        proxy.stop()


def _read_exactly(fd: int, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_spliced_pipes_carry_bytes_both_ways_in_order_and_the_end_of_input_ends_the_side():
    chunks = [os.urandom(n) for n in (1, 1000, 70_000, 3 << 20, 5)]
    total = sum(map(len, chunks))
    closed = threading.Event()

    def echo_then_note_the_close(connection: ServerConnection) -> None:
        echo(connection)
        closed.set()

    up_read, up_write = os.pipe()
    down_read, down_write = os.pipe()
    with far_end(echo_then_note_the_close) as (url, _):
        stream = open_relay(ticket(url))
        splice = threading.Thread(target=stream.splice_pipes, args=(up_read, down_write), daemon=True)
        splice.start()
        writer = threading.Thread(target=lambda: [os.write(up_write, c) for c in chunks], daemon=True)
        writer.start()
        got = _read_exactly(down_read, total)
        writer.join(TIMEOUT)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
        os.close(up_write)  # ssh closed its output: this relay side ends
        splice.join(TIMEOUT)
        assert not splice.is_alive()
        assert closed.wait(TIMEOUT)
        assert stream.sent == stream.received == total
    for fd in (up_read, down_read, down_write):  # the caller's descriptors are left open
        os.fstat(fd)
        os.close(fd)


def test_the_far_end_closing_ends_the_splice_after_its_last_bytes_reach_the_pipe():
    last = os.urandom(3 << 20)  # more than a pipe holds: the splice has to wait for the reader

    def send_and_close(connection: ServerConnection) -> None:
        connection.send(last)
        connection.close()

    up_read, up_write = os.pipe()
    down_read, down_write = os.pipe()
    with far_end(send_and_close) as (url, _):
        stream = open_relay(ticket(url))
        splice = threading.Thread(target=stream.splice_pipes, args=(up_read, down_write), daemon=True)
        splice.start()
        got = _read_exactly(down_read, len(last))
        splice.join(TIMEOUT)
        assert not splice.is_alive()
    assert got == last
    for fd in (up_read, up_write, down_read, down_write):
        os.close(fd)
