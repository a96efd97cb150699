#!/usr/bin/env bash
# Helpline on this machine in one command, on the embedded defaults (SQLite and
# a local blob directory): installs what is missing, makes .venv, initialises a
# server in .helpline-demo/, starts it on 127.0.0.1, enrolls this PC, opens a
# ticket from it, shares this PC's diagnostics with it, and shows that ticket as
# the user and as the engineer see it.
#
#   bash deploy/quickstart.sh              set up (or reuse) and run the tour on port 8700
#   bash deploy/quickstart.sh --port 8800  the same on another port (or HELPLINE_DEMO_PORT=8800)
#   bash deploy/quickstart.sh --stop       stop the demo server
#
# The demo keeps its own config and agent state under .helpline-demo/, so it
# never touches a real Helpline login on this machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$HELPLINE_ROOT"

DEMO="${HELPLINE_DEMO_DIR:-$HELPLINE_ROOT/.helpline-demo}"
PORT="${HELPLINE_DEMO_PORT:-8700}"
PIDFILE="$DEMO/server.pid"
ACTION=tour
while [ $# -gt 0 ]; do
    case "$1" in
        --stop) ACTION=stop; shift ;;
        --port) [ $# -ge 2 ] || die "--port needs a number, like --port 8800"; PORT="$2"; shift 2 ;;
        --port=*) PORT="${1#--port=}"; shift ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (try --port N or --stop)" ;;
    esac
done
case "$PORT" in ''|*[!0-9]*) die "the port must be a number from 1 to 65535, not '$PORT'" ;; esac
[ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "the port must be a number from 1 to 65535, not '$PORT'"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [ "$ACTION" = stop ]; then
    if running; then
        kill "$(cat "$PIDFILE")"
        for _ in $(seq 1 50); do running || break; sleep 0.2; done
        log "Stopped the demo server"
    else
        log "The demo server is not running"
    fi
    rm -f "$PIDFILE"
    exit 0
fi

ensure_packages "python3-venv:python3 -c 'import ensurepip'" "restic:command -v restic"
ensure_venv "server"
HL="$VENV/bin/helpline"
export HELPLINE_CONFIG_DIR="$DEMO/config" HELPLINE_AGENT_DIR="$DEMO/agent"
mkdir -p "$DEMO" && chmod 700 "$DEMO"

if [ ! -f "$DEMO/data/server.toml" ]; then
    log "Initialising a server in $DEMO/data (SQLite, local blobs)"
    python3 -c 'import secrets; print(secrets.token_urlsafe(18))' > "$DEMO/admin-password"
    chmod 600 "$DEMO/admin-password"
    "$HL" server init --data-dir "$DEMO/data" --admin admin --password-stdin < "$DEMO/admin-password"
fi

URL="http://127.0.0.1:$PORT"
if ! running; then
    if port_in_use "$PORT"; then
        die "port $PORT is already in use by another program; run again with --port N (for example --port $((PORT + 1)))"
    fi
    log "Starting the server on $URL (log: $DEMO/server.log)"
    nohup "$HL" server run --data-dir "$DEMO/data" --host 127.0.0.1 --port "$PORT" >> "$DEMO/server.log" 2>&1 &
    echo $! > "$PIDFILE"
fi
if ! wait_ready "$URL" 30; then
    running || die "the server stopped; see $DEMO/server.log"
    die "the server did not become ready in 30 s; see $DEMO/server.log"
fi
answers_as "$URL" "$DEMO/data/server-signing-key.pem" \
    || die "another server answers on port $PORT, not the demo's; stop it or run again with --port N"

log "Logging in as admin"
"$HL" login "$URL" -u admin --password-stdin < "$DEMO/admin-password"

if [ ! -f "$DEMO/agent/agent.json" ]; then
    log "Enrolling this PC"
    token="$("$HL" enroll-token create --group quickstart --expires-in 10m --json | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
    "$HL" agent enroll "$URL" "$token"
fi

log "Opening a ticket from this PC"
"$HL" request "Quick start: my first ticket" -d "Opened by deploy/quickstart.sh" --name "$(id -un)"
number="$("$HL" status --all --json | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)[0]["number"])')"

log "Sharing this PC's diagnostics with the ticket"
"$HL" share --ticket "$number" --yes --what "Trying Helpline" --since "just now" --tried "nothing yet"

log "What the user sees: helpline status $number"
"$HL" status "$number"
log "What the engineer sees: helpline ticket show $number"
"$HL" ticket show "$number"

cat <<INFO

Helpline is running at $URL (PID $(cat "$PIDFILE")).
  Admin login:  admin / password in $DEMO/admin-password
  Use the CLI:  export HELPLINE_CONFIG_DIR=$DEMO/config HELPLINE_AGENT_DIR=$DEMO/agent; $HL --help
  Read the diagnostics: $HL diag get $number --open
  Stop it:      bash deploy/quickstart.sh --stop
INFO
