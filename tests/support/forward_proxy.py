"""An HTTP forward proxy on loopback, like a company's web proxy: it forwards absolute-form requests
(``GET http://host:port/path``) and tunnels CONNECT, to loopback hosts only, and keeps the request line of
each, so a test proves a client went through it. Threads stop when :meth:`stop` is called.
"""

from __future__ import annotations

import select
import socket
import threading
from urllib.parse import urlsplit

HOST = "127.0.0.1"
_DROPPED = (b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive")


class ForwardProxy:
    def __init__(self, *, timeout: float = 120.0):
        self.timeout = timeout
        self.seen: list[str] = []  # "METHOD target" of every request, in order
        self._stop = threading.Event()
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> ForwardProxy:
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
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(self.timeout)
        upstream = None
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            request_line, *header_lines = head.split(b"\r\n")
            method, target, version = request_line.decode("latin-1").split(" ", 2)
            self.seen.append(f"{method} {target}")
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = self._dial(host, int(port))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
            else:
                parts = urlsplit(target)
                if parts.scheme != "http" or not parts.hostname:
                    client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                upstream = self._dial(parts.hostname, parts.port or 80)
                origin = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                kept = [line for line in header_lines if line.split(b":", 1)[0].strip().lower() not in _DROPPED]
                upstream.sendall(b"\r\n".join([f"{method} {origin} {version}".encode("latin-1"), *kept,
                                                b"Connection: close", b"", b""]) + rest)
            self._pipe(client, upstream)
        except (OSError, ValueError):
            return
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _dial(self, host: str, port: int) -> socket.socket:
        if host not in (HOST, "localhost"):
            raise ValueError("this proxy reaches loopback only")
        return socket.create_connection((HOST, port), timeout=self.timeout)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        """Carry bytes both ways until one side closes, the proxy stops, or nothing moves for the timeout."""
        idle = 0.0
        while not self._stop.is_set() and idle < self.timeout:
            ready, _, _ = select.select([a, b], [], [], 0.5)
            if not ready:
                idle += 0.5
                continue
            idle = 0.0
            for source in ready:
                data = source.recv(65536)
                if not data:
                    return
                (b if source is a else a).sendall(data)
