"""One HTTP connection to a Helpline server, turning its answers into Helpline errors."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent import __version__
from protocol.schemas import API_PREFIX
from protocol.errors import ConfigError, DamagedError, HelplineError, UnavailableError, error_class_for

def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_url(url: str, *, allow_insecure_http: bool | None = None) -> str:
    """Return the server's base URL without a trailing slash, or raise ConfigError.

    Plain http is accepted for loopback only, unless explicitly allowed
    (HELPLINE_INSECURE_HTTP=1), because every request carries a secret.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"'{url}' is not a server address.", hint="Give it like https://help.example.com.")
    if allow_insecure_http is None:
        allow_insecure_http = os.environ.get("HELPLINE_INSECURE_HTTP") == "1"
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_insecure_http:
        raise ConfigError(
            f"Refusing to send credentials over plain http to {parts.hostname}.",
            hint="Use an https:// address, or set HELPLINE_INSECURE_HTTP=1 on a trusted network.",
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def error_from_response(response: httpx.Response) -> HelplineError:
    """Build the Helpline error a server's error response stands for."""
    message, hint, code = f"The server answered {response.status_code}.", None, None
    try:
        detail = response.json()["error"]
        message, hint, code = detail["message"], detail.get("hint"), detail.get("code")
    except (ValueError, KeyError, TypeError):
        pass
    error = error_class_for(response.status_code, code)(message, hint=hint)
    retry = response.headers.get("Retry-After")
    if retry and retry.isdigit():
        error.retry_after = int(retry)
    return error


class ServerConnection:
    """A client for one server and one bearer token (engineer token or agent credential)."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None):
        self.base_url = normalize_url(base_url)
        headers = {"User-Agent": f"helpline/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Plain http (loopback, or explicitly allowed) has nothing to verify: skip loading the CA store.
        verify: Any = (os.environ.get("HELPLINE_CA_BUNDLE") or True) if self.base_url.startswith("https:") else False
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, verify=verify, transport=transport)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ServerConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return its JSON (see :meth:`_url` for ``path``)."""
        url = self._url(path)
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise UnavailableError(f"The server at {self.base_url} did not answer in time.", hint="Try again in a minute.") from exc
        except httpx.TransportError as exc:
            raise UnavailableError(
                f"Cannot reach the Helpline server at {self.base_url}.", hint="Check the address and the network connection."
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise UnavailableError(f"{self.base_url} did not answer like a Helpline server.",
                                   hint="Check the address.") from exc

    @staticmethod
    def _url(path: str) -> str:
        """``tickets`` means /v1/tickets; an absolute path such as ``/healthz`` is taken as is."""
        return path if path.startswith("/") else f"{API_PREFIX}/{path}"

    def download(self, path: str, dest: Path, progress: Callable[[int, int], None] | None = None) -> tuple[int, str]:
        """Stream a file to ``dest``; return (size, sha256), checked against X-Content-SHA256 if sent."""
        url = self._url(path)
        digest, size = hashlib.sha256(), 0
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                total = int(response.headers.get("Content-Length") or 0)
                with dest.open("wb") as out:
                    for block in response.iter_bytes(1 << 20):
                        out.write(block)
                        digest.update(block)
                        size += len(block)
                        if progress:
                            progress(size, total)
                claimed = response.headers.get("X-Content-SHA256")
        except httpx.TransportError as exc:
            raise UnavailableError(f"The download from {self.base_url} broke off.", hint="Try again.") from exc
        if claimed and claimed != digest.hexdigest():
            dest.unlink(missing_ok=True)
            raise DamagedError("The download arrived damaged (SHA-256 mismatch).", hint="Try again.")
        return size, digest.hexdigest()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)
