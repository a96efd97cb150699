#!/bin/sh
# Remove the Helpline agent from a Linux or macOS PC: stop its service, remove the service definitions,
# the virtual environment and (unless --keep-state) the agent's identity and state.
#
#   sudo sh uninstall.sh               # everything goes
#   sudo sh uninstall.sh --keep-state  # keep the identity: installing again later is the same agent
#
# The server keeps the agent's record, tickets and snapshots; an administrator retires the PC there.
set -eu

PREFIX=/opt/helpline-agent
KEEP_STATE=0
STOP=1
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

say() { printf 'helpline-uninstall: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    cat <<EOF2
Usage: uninstall.sh [OPTIONS]

Stop and remove the Helpline agent.

  --keep-state          Keep the agent's identity and state (installing again is the same agent).
  --prefix DIR          Where the agent was installed (default $PREFIX).
  --state-dir DIR       The agent's identity and state (default $STATE_DIR).
  --unit-dir DIR        Where the service definition is (default $UNIT_DIR).
  --user-unit-dir DIR   Where the user-session part is (default $USER_UNIT_DIR).
  --bin-dir DIR         Where the helpline command was linked ('none' to skip; default $BIN_DIR).
  --no-stop             Do not stop or disable the service (it is not running here).
  -h, --help            Show this help.
EOF2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --keep-state) KEEP_STATE=1; shift ;;
        --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
        --state-dir) STATE_DIR=${2:?--state-dir needs a folder}; shift 2 ;;
        --unit-dir) UNIT_DIR=${2:?--unit-dir needs a folder}; shift 2 ;;
        --user-unit-dir) USER_UNIT_DIR=${2:?--user-unit-dir needs a folder}; shift 2 ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a folder or none}; shift 2 ;;
        --no-stop) STOP=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
for path in "$PREFIX" "$STATE_DIR"; do
    case "$path" in
        /) die "refusing to remove /" ;;
        /*) ;;
        *) die "give absolute folders (not '$path')" ;;
    esac
done
# Only a folder install.sh made is removed: it holds the venv the agent ran from.
if [ -e "$PREFIX" ] && [ ! -d "$PREFIX/venv" ]; then
    die "$PREFIX does not look like a Helpline agent installation (no venv in it); nothing removed"
fi

if [ "$OS" = macos ]; then
    if [ "$STOP" = 1 ]; then
        launchctl bootout system/com.helpline.agent 2>/dev/null || true
    fi
    rm -f "$UNIT_DIR/com.helpline.agent.plist" "$USER_UNIT_DIR/com.helpline.agent-user.plist"
else
    if [ "$STOP" = 1 ]; then
        systemctl disable --now helpline-agent.service 2>/dev/null || true
        systemctl --global disable helpline-agent-user.service 2>/dev/null || true
    fi
    rm -f "$UNIT_DIR/helpline-agent.service" "$USER_UNIT_DIR/helpline-agent-user.service"
    [ "$STOP" = 0 ] || systemctl daemon-reload 2>/dev/null || true
fi
say "the service is stopped and its definitions removed"

if [ "$BIN_DIR" != none ] && [ -L "$BIN_DIR/helpline" ] && [ "$(readlink "$BIN_DIR/helpline")" = "$PREFIX/bin/helpline" ]; then
    rm -f "$BIN_DIR/helpline"
fi
rm -rf "$PREFIX"
say "removed $PREFIX"
if [ "$KEEP_STATE" = 1 ]; then
    say "kept the agent's identity and state in $STATE_DIR"
else
    rm -rf "$STATE_DIR" "$STATE_DIR-restores"
    say "removed the agent's identity and state ($STATE_DIR); an administrator retires the PC on the server"
fi
