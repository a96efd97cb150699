"""One HTTP connection to a Helpline server, turning its answers into Helpline errors."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import __version__
from protocol import agent_requests, key_handover, signing
from protocol.schemas import API_PREFIX
from protocol.version import PROTOCOL_HEADER, PROTOCOL_VERSION, parse_version
from protocol.errors import AuthError, ConfigError, DamagedError, HelplineError, UnavailableError, error_class_for

if TYPE_CHECKING:  # httpx is imported where a connection is made: commands that never connect skip its import
    import httpx


class UnverifiedAnswerError(AuthError):
    """An answer to this PC's agent is not signed by the server key it pinned: it was altered or forged on the way."""


@dataclass(frozen=True)
class AgentSigner:
    """This PC's agent as it talks to its server: its id and key sign requests, the pinned key checks answers."""

    agent_id: str
    key: Ed25519PrivateKey
    server_public_key: str
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    #: Which running copy of this identity signs (agent.store.instance_id); None sends no instance.
    instance: str | None = None
    #: Called with the server's new key after this agent followed a key hand-over, to pin it for good.
    on_repin: Callable[[str], None] | None = None

    def headers(self, method: str, target: str, content_sha256: str) -> dict[str, str]:
        return agent_requests.sign_request(self.key, agent_id=self.agent_id, method=method, target=target,
                                           content_sha256=content_sha256, now=self.clock(), instance=self.instance)

    def check_answer(self, request: httpx.Request, response: httpx.Response, body_sha256: str) -> None:
        """Raise UnverifiedAnswerError unless ``response`` is the server's signed answer to ``request``."""
        sent = request.headers
        payload = agent_requests.response_payload(
            nonce=sent[agent_requests.NONCE_HEADER], request_signature=sent[agent_requests.SIGNATURE_HEADER],
            method=request.method, target=_target(request), content_sha256=sent[agent_requests.CONTENT_HEADER],
            status=response.status_code, body_sha256=body_sha256,
        )
        signature = response.headers.get(agent_requests.RESPONSE_SIGNATURE_HEADER, "")
        if not signature or not agent_requests.verify(self.server_public_key, payload, signature):
            host = request.url.host
            raise UnverifiedAnswerError(
                f"The answer from {host} is not signed by the server key this PC pinned "
                f"({signing.fingerprint(self.server_public_key)}): something on the way may be intercepting it.",
                hint="Nothing from it was shown or used. Try another network; if your administrator replaced "
                     "the server, remove this PC's agent state and pair again.",
            )


def _target(request: httpx.Request) -> str:
    """The path and query exactly as they go on the wire: what both sides sign."""
    return request.url.raw_path.decode("ascii")

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


_POOLS: dict[Any, Any] = {}
_POOLS_LOCK = threading.Lock()


def pooled_transport(verify: Any) -> httpx.BaseTransport:
    """This process's connection pool for servers verified by ``verify`` (False for plain http), lent to one
    connection: closing the connection leaves the pool open.

    One command often talks to its server through several connections in turn (a share
    asks about the ticket, then sends the bundle). With one pool the second finds the
    first's connection still open: no second TCP and TLS handshake (one to two round
    trips each over a wide-area link), and the CA store is loaded once, not per
    connection. Connections end with the process or the server's keep-alive.
    """
    import httpx

    with _POOLS_LOCK:
        pool = _POOLS.get(verify)
        if pool is None:
            pool = _POOLS[verify] = httpx.HTTPTransport(verify=verify)
    return _borrowed_class()(pool)


def _environment_proxies() -> bool:
    """Whether a proxy variable (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, any case) is set: httpx then picks the proxy
    per address itself, which it does only for a client with no transport of its own."""
    from urllib.request import getproxies_environment

    return any(scheme != "no" for scheme in getproxies_environment())


@functools.cache
def _borrowed_class() -> type:
    import httpx

    class Borrowed(httpx.BaseTransport):
        """A pool lent to one client: requests go to the pool, closing the client does not close it."""

        def __init__(self, pool: httpx.BaseTransport):
            self._pool = pool

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return self._pool.handle_request(request)

        def close(self) -> None:
            pass

    return Borrowed


class ServerConnection:
    """A client for one server, as an engineer (a bearer token), as this PC's agent (``agent``: signed
    requests, answers checked against the pinned server key), or anonymously (bootstrap: enroll, pair)."""

    def __init__(self, base_url: str, token: str | None = None, *, agent: AgentSigner | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None):
        self.base_url = normalize_url(base_url)
        self.agent = agent
        headers = {"User-Agent": f"helpline/{__version__}", PROTOCOL_HEADER: str(PROTOCOL_VERSION)}
        #: The protocol version the server stated in its last answer (protocol.version; no header: version 1).
        self.server_protocol: int | None = None
        #: Fetches the server's key hand-overs (set by agent.client.HelplineClient): an answer signed by a key
        #: this PC does not know is accepted only after a chain of hand-overs from the pinned key leads to it.
        self.handovers: Callable[[], list[key_handover.Handover]] | None = None
        self._following = False
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Plain http (loopback, or explicitly allowed) has nothing to verify: skip loading the CA store.
        verify: Any = (os.environ.get("HELPLINE_CA_BUNDLE") or True) if self.base_url.startswith("https:") else False
        import httpx

        from agent.config import configured_proxy

        # A proxy set in the agent configuration wins; otherwise httpx follows HTTPS_PROXY, HTTP_PROXY,
        # ALL_PROXY and NO_PROXY from the environment (trust_env), as every other program on the PC does.
        # A transport given by the caller (in-process tests) is the whole way to the server: no proxy.
        proxy = configured_proxy() if transport is None else None
        if transport is None and proxy is None and not _environment_proxies():
            transport = pooled_transport(verify)  # (a transport given to httpx turns the environment's proxies off)
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, verify=verify,
                                    transport=transport, proxy=proxy)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ServerConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, unsigned: bool = False, **kwargs: Any) -> Any:
        """Send a request and return its JSON (see :meth:`_url` for ``path``).

        ``unsigned``: sent without the agent's signature and its answer not checked
        (only for answers that carry their own signatures: the key hand-overs).
        """
        import httpx

        request = self._build(method, path, unsigned=unsigned, **kwargs)
        try:
            response = self._client.send(request)
        except httpx.TimeoutException as exc:
            raise UnavailableError(f"The server at {self.base_url} did not answer in time.", hint="Try again in a minute.") from exc
        except httpx.TransportError as exc:
            raise UnavailableError(
                f"Cannot reach the Helpline server at {self.base_url}.", hint="Check the address and the network connection."
            ) from exc
        if self.agent is not None and not unsigned:
            self._check_answer(request, response, agent_requests.body_digest(response.content))
        self.server_protocol = parse_version(response.headers.get(PROTOCOL_HEADER))
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise UnavailableError(f"{self.base_url} did not answer like a Helpline server.",
                                   hint="Check the address.") from exc

    def _check_answer(self, request: httpx.Request, response: httpx.Response, body_sha256: str) -> None:
        """The agent's check of a signed answer; an unknown signer is accepted only through a valid key hand-over."""
        assert self.agent is not None
        try:
            self.agent.check_answer(request, response, body_sha256)
        except UnverifiedAnswerError:
            if not self._follow_handovers():
                raise
            self.agent.check_answer(request, response, body_sha256)

    def _follow_handovers(self) -> bool:
        """Pin the key the server's hand-overs lead to from the pinned one; False if none does (or none is served)."""
        if self.agent is None or self.handovers is None or self._following:
            return False
        self._following = True
        try:
            statements = self.handovers()
        except HelplineError:
            return False
        finally:
            self._following = False
        new_key = key_handover.follow(self.agent.server_public_key, statements, self.agent.clock())
        if new_key is None:
            return False
        self.agent = replace(self.agent, server_public_key=new_key)
        if self.agent.on_repin is not None:
            self.agent.on_repin(new_key)
        return True

    def _build(self, method: str, path: str, *, unsigned: bool = False, **kwargs: Any) -> httpx.Request:
        """The request to send; as an agent, signed over its method, target, date, nonce and body digest."""
        request = self._client.build_request(method, self._url(path), **kwargs)
        if self.agent is not None and not unsigned:
            body = request.read()  # the body is bytes already (JSON or one upload chunk); hashing it copies nothing
            request.headers.update(self.agent.headers(request.method, _target(request), agent_requests.body_digest(body)))
        return request

    @staticmethod
    def _url(path: str) -> str:
        """``tickets`` means /v1/tickets; an absolute path such as ``/healthz`` is taken as is."""
        return path if path.startswith("/") else f"{API_PREFIX}/{path}"

    def download(self, path: str, dest: Path, progress: Callable[[int, int], None] | None = None) -> tuple[int, str]:
        """Stream a file to ``dest``; return (size, sha256), checked against X-Content-SHA256 if sent."""
        import httpx

        request = self._build("GET", path)
        digest, size = hashlib.sha256(), 0
        try:
            response = self._client.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    response.read()
                    if self.agent is not None:
                        self._check_answer(request, response, agent_requests.body_digest(response.content))
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
            finally:
                response.close()
        except httpx.TransportError as exc:
            raise UnavailableError(f"The download from {self.base_url} broke off.", hint="Try again.") from exc
        if self.agent is not None:
            try:
                self._check_answer(request, response, digest.hexdigest())
            except UnverifiedAnswerError:
                dest.unlink(missing_ok=True)
                raise
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
