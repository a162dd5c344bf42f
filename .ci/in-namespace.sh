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
trap 'rm -rf "$HOME"' EXIT

# The session bus starts gnome-keyring's unlock prompt (gcr-prompter) with its own environment.
# Without DISPLAY the prompt fails at once, so a locked collection gives KeyringLocked. With a
# virtual display it would wait forever for a click. with-keyring.sh restores the display for
# the tests themselves.
export KEYSIDE_TEST_DISPLAY="${DISPLAY:-}" KEYSIDE_TEST_WAYLAND_DISPLAY="${WAYLAND_DISPLAY:-}"
env -u DISPLAY -u WAYLAND_DISPLAY dbus-run-session -- bash .ci/with-keyring.sh "$@"
