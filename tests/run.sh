#!/usr/bin/env bash
# The whole test suite, on a fresh Debian/Ubuntu machine too: installs restic,
# the OpenSSH client and server (sessions are checked against sshd), tmux, strace (the agent's install
# script is checked to put no secret in any program's arguments), PostgreSQL and nginx (the server behind a
# reverse proxy) if missing, makes .venv, installs Helpline
# with its server and dev extras, then runs pytest on SQLite and PostgreSQL
# (a throwaway cluster on loopback that the tests start and stop).
# With no arguments: the fast tests first, and the end-to-end tests only if they pass.
# Extra arguments go to pytest instead, e.g.  bash tests/run.sh tests/e2e -k pairing
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/bootstrap.sh"
cd "$HELPLINE_ROOT"

ensure_packages \
    "python3-venv:python3 -c 'import ensurepip'" \
    "restic:command -v restic" \
    "openssh-client:command -v ssh" "openssh-server:test -x /usr/sbin/sshd" "tmux:command -v tmux" \
    "cups-client:command -v lpstat" "pciutils:command -v lspci" "usbutils:command -v lsusb" \
    "dmidecode:command -v dmidecode" "smartmontools:command -v smartctl" \
    "strace:command -v strace" \
    "postgresql:pg_bindir" "nginx-light:command -v nginx || test -x /usr/sbin/nginx"
ensure_venv "server,dev"

export HELPLINE_TEST_DATABASES="${HELPLINE_TEST_DATABASES:-sqlite,postgresql}"
cores="$(nproc 2>/dev/null || echo 2)"
# One worker more than cores: the in-process tests wait on PostgreSQL now and then. The journeys spend most
# of their time waiting on servers, terminals and restic, not on the CPU: more than twice as many workers
# as cores keeps the cores busy while each waits.
workers="${HELPLINE_TEST_WORKERS:-$((cores + 1))}"
e2e_workers="${HELPLINE_E2E_WORKERS:-$((cores * 2 + 1))}"
if [ $# -gt 0 ]; then
    log "Running pytest $* on ${HELPLINE_TEST_DATABASES} with $workers workers"
    exec "$VENV/bin/python" -m pytest -n "$workers" "$@"
fi
# The fast tests (unit and in-process) first: when they fail, say so in a minute, not after the journeys.
log "Fast tests (unit and in-process) on ${HELPLINE_TEST_DATABASES} with $workers workers"
"$VENV/bin/python" -m pytest -n "$workers" -m "not e2e" || die "fast tests failed; end-to-end tests not run"
log "End-to-end tests through the real CLI and server, with $e2e_workers workers"
exec "$VENV/bin/python" -m pytest -n "$e2e_workers" -m e2e
