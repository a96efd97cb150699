"""The session host's channel buffer behaves as paramiko's own, read for read, at a fraction of the cost."""

from __future__ import annotations

import random
import threading
import time

import paramiko
import pytest
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from agent.session import channel_buffer
from agent.session.channel_buffer import ChannelBuffer


@pytest.mark.parametrize("seed", range(6))
def test_every_read_matches_paramikos_buffer(seed):
    rng = random.Random(seed)
    ours, theirs = ChannelBuffer(), BufferedPipe()
    ours_event, theirs_event = threading.Event(), threading.Event()
    ours.set_event(ours_event)
    theirs.set_event(theirs_event)
    for _ in range(400):
        action = rng.random()
        if action < 0.45:
            data = rng.randbytes(rng.choice((0, 1, 7, 100, 4096, 40_000)))
            ours.feed(data)
            theirs.feed(data)
        elif action < 0.9:
            size = rng.choice((1, 3, 100, 5000, 70_000, 1 << 24))
            if len(theirs):
                assert ours.read(size) == theirs.read(size)
            else:
                for pipe in (ours, theirs):
                    with pytest.raises(PipeTimeout):
                        pipe.read(size, timeout=0.0)
        else:
            assert ours.empty() == theirs.empty()
        assert len(ours) == len(theirs) and ours.read_ready() == theirs.read_ready()
        assert ours_event.is_set() == theirs_event.is_set()
    ours.close()
    theirs.close()
    assert ours.read(1 << 30) == theirs.read(1 << 30)
    assert ours.read(10) == theirs.read(10) == b""  # closed and empty: the end, at once
    assert ours_event.is_set() and theirs_event.is_set()


def test_a_read_waits_for_data_from_another_thread():
    buffer = ChannelBuffer()
    threading.Timer(0.05, buffer.feed, args=(b"hello",)).start()
    assert buffer.read(100, timeout=5) == b"hello"


def test_a_read_gives_up_after_its_timeout():
    buffer = ChannelBuffer()
    started = time.monotonic()
    with pytest.raises(PipeTimeout):
        buffer.read(10, timeout=0.05)
    assert time.monotonic() - started >= 0.04


def test_close_wakes_a_waiting_read_with_the_end():
    buffer = ChannelBuffer()
    threading.Timer(0.05, buffer.close).start()
    assert buffer.read(10, timeout=5) == b""


def test_an_event_set_on_a_closed_buffer_starts_set():
    buffer = ChannelBuffer()
    buffer.close()
    event = threading.Event()
    buffer.set_event(event)
    assert event.is_set()


def test_installed_paramikos_channels_use_it(monkeypatch):
    monkeypatch.setattr(paramiko.channel, "BufferedPipe", BufferedPipe)
    channel_buffer.install()
    chan = paramiko.Channel(7)
    assert isinstance(chan.in_buffer, ChannelBuffer) and isinstance(chan.in_stderr_buffer, ChannelBuffer)
