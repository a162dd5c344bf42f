#!/usr/bin/env bash
# Runs inside the session bus: starts gnome-keyring-daemon with a login collection unlocked by a
# throwaway password, checks that the Secret Service responds, then runs the README's test command.
set -euo pipefail

if command -v gnome-keyring-daemon >/dev/null; then
    # The daemon reads the unlock password on stdin and creates the login collection if needed.
    eval "$(printf 'ci-throwaway-password' | gnome-keyring-daemon --unlock --components=secrets)"
    export GNOME_KEYRING_CONTROL
    # The tests need the default collection to exist and be unlocked, not just a daemon on the bus.
    if python3 - <<'PROBE'
import sys
from contextlib import closing

import secretstorage

try:
    with closing(secretstorage.dbus_init()) as connection:
        locked = secretstorage.get_default_collection(connection).is_locked()
except Exception as error:
    sys.exit(f"with-keyring.sh: the Secret Service did not answer: {error}")
sys.exit("with-keyring.sh: the default collection is locked" if locked else 0)
PROBE
    then
        export KEYSIDE_SECRET_SERVICE=1
    fi
fi
if [ "${KEYSIDE_SECRET_SERVICE:-}" != 1 ]; then
    echo "with-keyring.sh: no Secret Service started, so tests that need it skip (or fail in CI)" >&2
fi

# Give the tests back the display that in-namespace.sh hid from the session bus.
if [ -n "${KEYSIDE_TEST_DISPLAY:-}" ]; then export DISPLAY="$KEYSIDE_TEST_DISPLAY"; fi
if [ -n "${KEYSIDE_TEST_WAYLAND_DISPLAY:-}" ]; then export WAYLAND_DISPLAY="$KEYSIDE_TEST_WAYLAND_DISPLAY"; fi
unset KEYSIDE_TEST_DISPLAY KEYSIDE_TEST_WAYLAND_DISPLAY

# The README's test command.
python3 -m pytest "$@"
