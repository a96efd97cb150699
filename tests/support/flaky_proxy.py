"""A TCP proxy on loopback that cuts connections mid-stream, for testing resumable uploads.

Each connection may carry ``drop_after`` bytes from the client before the proxy
resets both sides, until ``drops`` connections have been cut; after that it
passes everything through. Threads stop when :meth:`stop` is called.
"""

from __future__ import annotations

import socket
import struct
import threading

HOST = "127.0.0.1"


class FlakyProxy:
    def __init__(self, upstream_port: int, *, drop_after: int, drops: int):
        self.upstream_port = upstream_port
        self.drop_after = drop_after
        self.drops_left = drops
        self.dropped = 0
        self.bytes_up = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(32)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> FlakyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                cut = self.drops_left > 0
                if cut:
                    self.drops_left -= 1
            budget = [self.drop_after if cut else None]
            threading.Thread(target=self._pump, args=(client, upstream, budget, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, budget, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, budget: list, upward: bool) -> None:
        src.settimeout(0.5)
        try:
            while not self._stop.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if upward:
                    with self._lock:
                        self.bytes_up += len(data)
                    if budget[0] is not None:
                        budget[0] -= len(data)
                        if budget[0] <= 0:
                            with self._lock:
                                self.dropped += 1
                            break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _reset(src)
            _reset(dst)


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a dropped network path looks to both ends."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
