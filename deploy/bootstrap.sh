# Shared set-up for deploy/quickstart.sh and tests/run.sh (sourced, not run).
# Installs what is missing from Debian's packages, then a virtual environment
# in .venv with Helpline and the extras asked for. Safe to run again: it skips
# what is already there.

HELPLINE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HELPLINE_VENV:-$HELPLINE_ROOT/.venv}"

log() {
    if [ -t 2 ]; then printf '\033[1m==>\033[0m %s\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pg_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null)"
        [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

# ensure_packages PKG... : each PKG is "debian-package:probe-command" (probe empty = always check dpkg).
ensure_packages() {
    local missing=() spec pkg probe
    for spec in "$@"; do
        pkg="${spec%%:*}"; probe="${spec#*:}"
        if [ -n "$probe" ]; then
            eval "$probe" >/dev/null 2>&1 && continue
        else
            dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && continue
        fi
        missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no sudo to install them; install them and run again"
        sudo="sudo -n"
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get; install them and run again"
    log "Installing from Debian's packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
    # Installing a package must not start its service (openssh-server would listen on every
    # address): while apt runs, a policy-rc.d that refuses starts, unless the machine has its own.
    local policy=/usr/sbin/policy-rc.d placed=0 status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# placed by Helpline while installing packages\nexit 101\n' | $sudo tee "$policy" >/dev/null \
            && $sudo chmod 0755 "$policy" && placed=1
    fi
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
    [ "$placed" = 1 ] && $sudo rm -f "$policy"
    [ "$status" = 0 ] || die "apt-get install ${missing[*]} failed"
}

# ensure_venv EXTRAS : create .venv and install Helpline (editable) with those extras
# (comma-separated). Skipped when this pyproject.toml (and the version it reads from protocol/version.py) was
# installed with them already.
ensure_venv() {
    local extras="$1" stamp hash have missing=0 extra
    if [ ! -x "$VENV/bin/python" ]; then
        log "Creating a virtual environment in $VENV"
        python3 -m venv "$VENV" || die "python3 -m venv failed (is python3-venv installed?)"
    fi
    "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Helpline needs Python 3.11 or newer"
    stamp="$VENV/.helpline-installed"
    hash="$(cat "$HELPLINE_ROOT/pyproject.toml" "$HELPLINE_ROOT/protocol/version.py" | sha256sum | cut -d' ' -f1)"
    have=""
    [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$hash" ] && have="$(sed -n 2p "$stamp")"
    for extra in ${extras//,/ }; do
        case ",$have," in *",$extra,"*) ;; *) missing=1 ;; esac
    done
    if [ -z "$have" ] || [ "$missing" = 1 ] || [ ! -x "$VENV/bin/helpline" ]; then
        [ -n "$have" ] && extras="$have,$extras"
        log "Installing Helpline [$extras] into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
        if ! "$VENV/bin/python" -m pip install -q -e "$HELPLINE_ROOT[$extras]" > "$VENV/pip-install.log" 2>&1; then
            tail -n 20 "$VENV/pip-install.log" >&2
            die "pip install failed (full log: $VENV/pip-install.log)"
        fi
        printf '%s\n%s\n' "$hash" "$extras" > "$stamp"
    fi
    # Byte-compile the source tree so every `helpline` start is fast, even where
    # PYTHONDONTWRITEBYTECODE keeps imports from writing .pyc files themselves.
    "$VENV/bin/python" -m compileall -q -j 0 "$HELPLINE_ROOT/agent" "$HELPLINE_ROOT/cli" "$HELPLINE_ROOT/protocol" "$HELPLINE_ROOT/server" >/dev/null 2>&1 || true
    # And the agent's compiled regular expressions (agent/regexes.py): about 0.1 s of each start.
    "$VENV/bin/python" -m agent.regexes >/dev/null 2>&1 || true
}

# wait_ready URL SECONDS : poll URL/readyz until it answers 200, at most SECONDS.
wait_ready() {
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import sys, time, urllib.request
url, limit = sys.argv[1] + "/readyz", float(sys.argv[2])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
}

# port_in_use PORT : true when something on 127.0.0.1 already accepts connections on PORT.
port_in_use() {
    "$VENV/bin/python" - "$1" <<'PY'
import socket, sys
with socket.socket() as s:
    s.settimeout(1)
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

# answers_as URL KEYFILE : true when the server at URL signs with the key in KEYFILE (it is ours).
answers_as() {
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import json, sys, urllib.request
from pathlib import Path
from protocol import signing
url, keyfile = sys.argv[1], sys.argv[2]
mine = signing.public_key_b64(signing.load_private_key(Path(keyfile)))
try:
    with urllib.request.urlopen(url + "/v1/server", timeout=5) as resp:
        sys.exit(0 if json.load(resp).get("public_key") == mine else 1)
except (OSError, ValueError):
    sys.exit(1)
PY
}
