#!/usr/bin/env bash
# Runs inside `unshare --net`: only the loopback interface exists, so no test or child
# process can reach another host. Starts a session bus with an unlocked gnome-keyring,
# then runs the README's test command.
set -euo pipefail
ip link set lo up
export KEYSIDE_NETNS=1

# A throwaway HOME so the keyring, logs and vault files of this run touch nothing real.
HOME="$(mktemp -d)"
export HOME
export XDG_RUNTIME_DIR="$HOME/run" XDG_DATA_HOME="$HOME/.local/share" XDG_CONFIG_HOME="$HOME/.config"
mkdir -p -m 0700 "$XDG_RUNTIME_DIR"

exec dbus-run-session -- bash .ci/with-keyring.sh "$@"
