"""A channel's incoming buffer that costs no more than the data it holds: chunks in a queue.

paramiko buffers each channel's incoming data in an ``array`` that every packet
is appended to and every read cuts from the front. A read that leaves data
behind moves all of it, and a buffer emptied and filled again is reallocated
each time: for a bulk copy at a full window that was a large part of the
session host's CPU. :class:`ChannelBuffer` keeps the packets as they came and
joins only what a read takes, with the same interface and behaviour (events,
timeouts, close), and :func:`install` makes paramiko use it for the channels
this process opens or accepts from then on.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from paramiko import channel as paramiko_channel
from paramiko.buffered_pipe import PipeTimeout


class ChannelBuffer:
    """paramiko's ``BufferedPipe`` interface: ``feed`` from the transport thread, ``read`` from the channel's reader."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._event: threading.Event | None = None
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._closed = False

    def set_event(self, event: threading.Event) -> None:
        """Set ``event`` whenever data is ready or the buffer is closed, and clear it otherwise (from now on)."""
        with self._lock:
            self._event = event
            # Set at once when closed or holding data: nothing else may ever set it (a select on it would hang).
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes) -> None:
        """Add ``data`` (called by the transport's thread)."""
        with self._lock:
            if self._event is not None:
                self._event.set()
            if data:
                self._chunks.append(bytes(data))
                self._size += len(data)
            self._cv.notify_all()

    def read_ready(self) -> bool:
        """True when a read would return data at once."""
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        """Up to ``nbytes`` bytes, waiting for some if none are here; b"" once closed and empty.

        PipeTimeout when ``timeout`` seconds pass without data (``0.0``: do not wait).
        """
        with self._lock:
            if not self._size:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                while not self._size and not self._closed:
                    then = time.time()
                    self._cv.wait(timeout)
                    if timeout is not None:
                        timeout -= time.time() - then
                        if timeout <= 0.0:
                            raise PipeTimeout()
                if not self._size:
                    return b""
            out = self._take(nbytes)
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def _take(self, nbytes: int) -> bytes:
        """Up to ``nbytes`` from the front (lock held); whole chunks are handed over without a copy."""
        chunks = self._chunks
        if len(chunks[0]) >= nbytes or len(chunks) == 1:
            first = chunks.popleft()
            if len(first) > nbytes:
                chunks.appendleft(first[nbytes:])
                first = first[:nbytes]
            self._size -= len(first)
            return first
        taken: list[bytes] = []
        wanted = nbytes
        while chunks and wanted > 0:
            chunk = chunks.popleft()
            if len(chunk) > wanted:
                chunks.appendleft(chunk[wanted:])
                chunk = chunk[:wanted]
            taken.append(chunk)
            wanted -= len(chunk)
        out = b"".join(taken)
        self._size -= len(out)
        return out

    def empty(self) -> bytes:
        """Everything buffered, which is then gone."""
        with self._lock:
            out = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def close(self) -> None:
        """No more data will come: reads return what is left, then b""."""
        with self._lock:
            self._closed = True
            self._cv.notify_all()
            if self._event is not None:
                self._event.set()

    def __len__(self) -> int:
        with self._lock:
            return self._size


def install() -> None:
    """Make paramiko's channels created from now on in this process buffer their input in a :class:`ChannelBuffer`,
    and run what :func:`after_reply` deferred once a channel request has been answered."""
    from paramiko.common import MSG_CHANNEL_REQUEST
    from paramiko.transport import Transport

    paramiko_channel.BufferedPipe = ChannelBuffer  # type: ignore[attr-defined]
    # The transport dispatches a channel request through its own table, which holds the handler itself.
    handlers = Transport._channel_handler_table
    if not getattr(handlers[MSG_CHANNEL_REQUEST], "answers_first", False):
        handlers[MSG_CHANNEL_REQUEST] = _answer_then_run(handlers[MSG_CHANNEL_REQUEST])


_DEFERRED = "_helpline_after_reply"


def after_reply(channel, work) -> None:
    """Run ``work`` once paramiko has sent its answer to the request being handled on ``channel`` (an exec's
    success, say). A command that ends at once must not close its channel before the client has heard that the
    command started: the client would take the close for a refusal."""
    setattr(channel, _DEFERRED, work)


def _answer_then_run(handle_request):
    def handle_then_run(channel, message):
        try:
            return handle_request(channel, message)
        finally:
            work = channel.__dict__.pop(_DEFERRED, None)
            if work is not None:
                work()

    handle_then_run.answers_first = True  # type: ignore[attr-defined]
    return handle_then_run
