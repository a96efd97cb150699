"""Run the server: migrations, runtime, app and uvicorn, until Ctrl-C or SIGTERM."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn

from protocol import signing
from server.app import create_app
from server.migrate import upgrade
from server.runtime import build_runtime
from server.settings import ServerSettings

SHUTDOWN_GRACE_SECONDS = 5.0
KEEP_ALIVE_SECONDS = 30


def serve(settings: ServerSettings, *, access_log: bool = True, announce: Callable[[str], None] = lambda line: None) -> None:
    """Bring the schema up to date and serve ``settings`` on uvicorn until asked to stop.

    ``announce`` receives the start-up line (address, data directory, key
    fingerprint) once the app is built, and on PostgreSQL a second one (the
    doorbell's channel, the address other server processes forward relay sides to). Raise ConfigError if a default secret
    would be used outside development. The database connections are closed
    after uvicorn has drained the requests and stopped the background jobs.
    """
    settings.refuse_insecure_defaults()
    state = build_runtime(settings)
    try:
        upgrade(state.engine)
        app = create_app(state)
        scheme = "https" if settings.tls_cert_file else "http"
        announce(f"Helpline server on {scheme}://{settings.host}:{settings.port} — data in {settings.data_dir}, "
                 f"key {signing.fingerprint(state.public_key)}")
        if state.bus is not None:  # PostgreSQL: one of possibly several processes
            announce(f"Doorbell on PostgreSQL channel {settings.bus.channel}; other server processes forward relay "
                     f"sides to {state.advertise_url}")
        uvicorn.run(
            app, host=settings.host, port=settings.port, proxy_headers=False,  # the app reads X-Forwarded-For itself (server.forwarding)
            ssl_certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
            ssl_keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
            access_log=access_log, log_level=settings.log_level, server_header=False,
            # The session relay pings each side every 5 s: a side gone without a word is closed within 15 s.
            ws_ping_interval=5.0, ws_ping_timeout=10.0,
            # An agent polls again on its connection within a second of its last poll's answer; with uvicorn's
            # default 5 s a busy server (or a slow PC) closes connections as the next poll is sent on them, and
            # the agent sees "server disconnected" and backs off. Idle connections cost little.
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            # On SIGTERM, what still runs after this long is cancelled: agents' long polls and relayed sessions
            # would otherwise hold the stop for their whole wait; agents poll again and uploads resume.
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
    finally:
        state.engine.dispose()
