#!/bin/sh
# Install (or upgrade in place) the Helpline agent on a Linux or macOS PC, enroll it, start its service.
#
#   echo "$TOKEN" | sudo sh install.sh --server https://help.example.com --token-file -
#   sudo HELPLINE_ENROLL_TOKEN=… sh install.sh --server https://help.example.com
#   sudo sh install.sh --server https://help.example.com --token-file /root/helpline-token
#
# The agent goes into its own virtual environment under the prefix (default /opt/helpline-agent); restic
# comes from the system's package manager when it is missing. The enrollment token is read from standard
# input (--token-file -), a file, or HELPLINE_ENROLL_TOKEN, and is handed to `helpline agent enroll` on its
# standard input or as the file's name: never on a command line, where other users of the PC could read it.
# Running the script again upgrades the agent in place and keeps its identity: a PC already enrolled with
# the server is not enrolled again (no token needed, no second agent), unless --reenroll is given.
# Run `sh install.sh --help` for every option.
set -eu

PREFIX=/opt/helpline-agent
SOURCE=""
SERVER=""
SERVER_KEY=""
TOKEN_FILE=""
PYTHON=""
START=1
REENROLL=0
case "$(uname -s)" in
    Darwin)
        OS=macos
        STATE_DIR="/Library/Application Support/Helpline"
        UNIT_DIR=/Library/LaunchDaemons
        USER_UNIT_DIR=/Library/LaunchAgents
        ;;
    *)
        OS=linux
        STATE_DIR=/var/lib/helpline-agent
        UNIT_DIR=/etc/systemd/system
        USER_UNIT_DIR=/etc/systemd/user
        ;;
esac
BIN_DIR=/usr/local/bin
HERE=$(cd "$(dirname "$0")" && pwd)

say() { printf 'helpline-install: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    cat <<EOF
Usage: install.sh [OPTIONS]

Install or upgrade the Helpline agent, enroll this PC, and start the agent's service.

  --server URL          The Helpline server (needed unless this PC is enrolled already).
  --token-file FILE     Read the enrollment token from FILE's first line; '-' reads standard input.
                        Without it, HELPLINE_ENROLL_TOKEN is used. Never give the token as an argument.
  --server-key FP       Refuse a server whose key has another fingerprint (SHA256:…).
  --reenroll            Enroll again even if this PC is enrolled with the server (spends a token use).
  --from PATH           Install from this wheel, sdist or source folder
                        (default: the source tree this script is in, else the helpline package).
  --prefix DIR          Where the agent's virtual environment goes (default $PREFIX).
  --state-dir DIR       The agent's identity and state (default $STATE_DIR).
  --unit-dir DIR        Where the service definition goes (default $UNIT_DIR).
  --user-unit-dir DIR   Where the user-session part goes (default $USER_UNIT_DIR).
  --bin-dir DIR         Link the helpline command into DIR for users ('none' to skip; default $BIN_DIR).
  --python PYTHON       The Python (3.11 or newer) that makes the virtual environment.
  --no-start            Write the service definitions but do not enable or start the service.
  -h, --help            Show this help.
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --server) SERVER=${2:?--server needs a URL}; shift 2 ;;
        --token-file) TOKEN_FILE=${2:?--token-file needs a file or -}; shift 2 ;;
        --server-key) SERVER_KEY=${2:?--server-key needs a fingerprint}; shift 2 ;;
        --reenroll) REENROLL=1; shift ;;
        --from) SOURCE=${2:?--from needs a path}; shift 2 ;;
        --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
        --state-dir) STATE_DIR=${2:?--state-dir needs a folder}; shift 2 ;;
        --unit-dir) UNIT_DIR=${2:?--unit-dir needs a folder}; shift 2 ;;
        --user-unit-dir) USER_UNIT_DIR=${2:?--user-unit-dir needs a folder}; shift 2 ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a folder or none}; shift 2 ;;
        --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
        --no-start) START=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

for path in "$PREFIX" "$STATE_DIR" "$UNIT_DIR" "$USER_UNIT_DIR"; do
    case "$path" in
        /*) ;;
        *) die "give absolute folders (not '$path')" ;;
    esac
    case "$path" in
        *'|'*|*'&'*|*'\'*) die "the folder '$path' has a character a service definition cannot hold" ;;
    esac
done
VENV="$PREFIX/venv"
HELPLINE="$PREFIX/bin/helpline"

# --- the Python that makes the venv: 3.11 or newer -------------------------------------------------------
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if [ -z "$PYTHON" ]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            PYTHON=$(command -v "$candidate")
            break
        fi
    done
    [ -n "$PYTHON" ] || die "Python 3.11 or newer is needed; install it, or give one with --python"
else
    python_ok "$PYTHON" || die "$PYTHON is not Python 3.11 or newer"
fi

# --- enrolled already? Then no token is needed and none is spent ------------------------------------------
enrolled_with() {
    # Exit 0 if the agent state in $STATE_DIR is enrolled with server $1 (any server when $1 is empty).
    "$PYTHON" - "$STATE_DIR/agent.json" "$1" <<'EOF'
import json, sys
try:
    with open(sys.argv[1], encoding="utf-8") as fh:
        state = json.load(fh)
except (OSError, ValueError):
    sys.exit(1)
wanted = sys.argv[2].strip().rstrip("/")
sys.exit(0 if state.get("enrolled") and (not wanted or state.get("server_url", "").rstrip("/") == wanted) else 1)
EOF
}

ENROLL=1
if [ "$REENROLL" = 0 ] && enrolled_with "$SERVER"; then
    ENROLL=0
    say "this PC is enrolled already; upgrading in place and keeping its identity"
fi
TOKEN=""
if [ "$ENROLL" = 1 ]; then
    [ -n "$SERVER" ] || die "this PC is not enrolled yet: give --server URL"
    # Read the token now, before anything is installed: a missing token fails in a second, not after pip.
    if [ "$TOKEN_FILE" = "-" ]; then
        IFS= read -r TOKEN || [ -n "$TOKEN" ] || die "no enrollment token on standard input"
    elif [ -n "$TOKEN_FILE" ]; then
        [ -r "$TOKEN_FILE" ] || die "cannot read the token file $TOKEN_FILE"
    elif [ -z "${HELPLINE_ENROLL_TOKEN:-}" ]; then
        die "no enrollment token: pipe it in with --token-file -, or use --token-file FILE or HELPLINE_ENROLL_TOKEN"
    fi
fi
# Only `helpline agent enroll` gets the token; pip and the package manager run without it.
TOKEN_ENV=${HELPLINE_ENROLL_TOKEN:-}
unset HELPLINE_ENROLL_TOKEN 2>/dev/null || true

# --- restic, from the system's package manager where it is missing --------------------------------------
if command -v restic >/dev/null 2>&1; then
    say "restic is installed already ($(command -v restic))"
elif [ "$OS" = macos ]; then
    command -v brew >/dev/null 2>&1 || die "restic is missing and Homebrew is not installed: install restic first"
    say "installing restic with Homebrew"
    brew install restic
elif command -v apt-get >/dev/null 2>&1; then
    say "installing restic with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q restic || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q restic; }
elif command -v dnf >/dev/null 2>&1; then
    say "installing restic with dnf"
    dnf install -y restic
elif command -v zypper >/dev/null 2>&1; then
    say "installing restic with zypper"
    zypper --non-interactive install restic
else
    die "restic is missing and no package manager was found (apt-get, dnf, zypper): install restic first"
fi

# --- the agent in its own virtual environment ------------------------------------------------------------
if [ -z "$SOURCE" ]; then
    if [ -f "$HERE/../../pyproject.toml" ]; then
        SOURCE=$(cd "$HERE/../.." && pwd)
    else
        SOURCE=helpline
    fi
fi
umask 022  # the venv is read by every user's `helpline`; the state folder below is the service's alone
mkdir -p "$PREFIX/bin"
# A pip of 22.3 or newer beside the chosen Python installs into the venv from outside (--python), so the
# venv needs no pip of its own (seconds saved per install); otherwise the venv gets its own.
OUTER_PIP=0
if "$PYTHON" -c 'import sys, pip; sys.exit(tuple(int(p) for p in pip.__version__.split(".")[:2]) < (22, 3))' 2>/dev/null; then
    OUTER_PIP=1
fi
pip_install() {
    if [ "$OUTER_PIP" = 1 ]; then
        "$PYTHON" -m pip --python "$VENV/bin/python" install --quiet --disable-pip-version-check "$@"
    else
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    fi
}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "upgrading the agent in $VENV from $SOURCE"
else
    say "installing the agent into $VENV from $SOURCE"
    if [ "$OUTER_PIP" = 1 ]; then
        "$PYTHON" -m venv --without-pip "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi
if [ "$OUTER_PIP" = 0 ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    "$VENV/bin/python" -m ensurepip --default-pip >/dev/null
fi
# The first pip run brings new dependencies; the second puts exactly this build in place even when its
# version number did not change (a source folder).
pip_install --upgrade "$SOURCE"
pip_install --force-reinstall --no-deps "$SOURCE"
# The agent's compiled regular expressions, cached beside its bytecode (about 0.1 s of each start).
"$VENV/bin/python" -m agent.regexes >/dev/null 2>&1 || true
ln -sf "$VENV/bin/helpline" "$HELPLINE"
if [ "$BIN_DIR" != none ]; then
    mkdir -p "$BIN_DIR"
    ln -sf "$HELPLINE" "$BIN_DIR/helpline"
fi

# --- the identity: the service's own folder, then enrollment ---------------------------------------------
(umask 077 && mkdir -p "$STATE_DIR" "$STATE_DIR-restores")
# The restore staging area sits beside the state folder: the service restores there, then the user's own
# child moves the files home (agent/service/localapi.py).
chmod 0700 "$STATE_DIR" "$STATE_DIR-restores"
if [ "$ENROLL" = 1 ]; then
    set -- agent enroll "$SERVER"
    [ -z "$SERVER_KEY" ] || set -- "$@" --server-key "$SERVER_KEY"
    if [ "$TOKEN_FILE" = "-" ]; then
        # printf is the shell's own: the token goes down the pipe, never into a process's arguments.
        printf '%s\n' "$TOKEN" | HELPLINE_AGENT_DIR="$STATE_DIR" "$HELPLINE" "$@" -
        TOKEN=""
    elif [ -n "$TOKEN_FILE" ]; then
        HELPLINE_AGENT_DIR="$STATE_DIR" "$HELPLINE" "$@" --token-file "$TOKEN_FILE"
    else
        # An assignment before the command: the token is in its environment, which only its owner can read.
        HELPLINE_ENROLL_TOKEN="$TOKEN_ENV" HELPLINE_AGENT_DIR="$STATE_DIR" "$HELPLINE" "$@"
    fi
fi
TOKEN_ENV=""

# --- the service definitions, with this installation's real paths ----------------------------------------
render() {
    # render TEMPLATE DEST: the template with @PREFIX@ and @STATE_DIR@ replaced, written atomically.
    mkdir -p "$(dirname "$2")"
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@STATE_DIR@|$STATE_DIR|g" "$1" > "$2.tmp"
    chmod 0644 "$2.tmp"
    mv -f "$2.tmp" "$2"
}
if [ "$OS" = macos ]; then
    DAEMON="$UNIT_DIR/com.helpline.agent.plist"
    AGENT="$USER_UNIT_DIR/com.helpline.agent-user.plist"
    render "$HERE/macos/com.helpline.agent.plist" "$DAEMON"
    render "$HERE/macos/com.helpline.agent-user.plist" "$AGENT"
    mkdir -p /Library/Logs/Helpline 2>/dev/null || true
    say "wrote $DAEMON and $AGENT"
    if [ "$START" = 1 ]; then
        launchctl bootout system/com.helpline.agent 2>/dev/null || true
        launchctl bootstrap system "$DAEMON"
        launchctl enable system/com.helpline.agent
        say "the agent's service is running (launchctl print system/com.helpline.agent)"
    fi
else
    UNIT="$UNIT_DIR/helpline-agent.service"
    USER_UNIT="$USER_UNIT_DIR/helpline-agent-user.service"
    render "$HERE/systemd/helpline-agent.service" "$UNIT"
    render "$HERE/systemd/helpline-agent-user.service" "$USER_UNIT"
    say "wrote $UNIT and $USER_UNIT"
    if [ "$START" = 1 ]; then
        systemctl daemon-reload
        systemctl enable helpline-agent.service
        systemctl restart helpline-agent.service  # an upgrade runs the new code at once
        systemctl --global enable helpline-agent-user.service
        say "the agent's service is running (systemctl status helpline-agent)"
    fi
fi
[ "$START" = 1 ] || say "not started (--no-start); run it with: HELPLINE_AGENT_DIR='$STATE_DIR' $HELPLINE agent run"
say "done: the Helpline agent is installed in $PREFIX"
