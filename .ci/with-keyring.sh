#!/usr/bin/env bash
# Runs inside the session bus: starts gnome-keyring-daemon with a login collection unlocked by a
# throwaway password, then the README's test command.
set -euo pipefail

# The daemon reads the unlock password on stdin and creates the login collection if needed.
eval "$(printf 'ci-throwaway-password' | gnome-keyring-daemon --unlock --components=secrets)"
export GNOME_KEYRING_CONTROL SSH_AUTH_SOCK 2>/dev/null || true
export KEYSIDE_SECRET_SERVICE=1

# The README's test command.
python3 -m pytest "$@"
