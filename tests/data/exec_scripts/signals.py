"""Report the signals that a `keyside exec` child receives, for tests.

Usage: signals.py MODE [READY_FILE]
  exit     on the first relayed signal, print its name and exit with 10 + the signal number
  die      use the default actions, so the first signal kills the process
  count    print each signal's name, and exit 0 when a line "quit" arrives on stdin

The script prints "ready" once its handlers are installed, and creates READY_FILE when one is
given.
"""

import signal
import sys
import time

RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
mode = sys.argv[1]


def exit_on_signal(signum: int, frame: object) -> None:
    print(f"got {signal.Signals(signum).name}", flush=True)
    sys.exit(10 + signum)


def count_signal(signum: int, frame: object) -> None:
    print(f"got {signal.Signals(signum).name}", flush=True)


if mode == "exit":
    for signum in RELAYED:
        signal.signal(signum, exit_on_signal)
elif mode == "die":
    # Python turns SIGINT into KeyboardInterrupt, but the default action ends the process at once.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
elif mode == "count":
    for signum in RELAYED:
        signal.signal(signum, count_signal)

print("ready", flush=True)
if len(sys.argv) > 2:
    with open(sys.argv[2], "w", encoding="utf-8") as handle:
        handle.write("ready")
if mode in ("exit", "die"):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(99)

for line in sys.stdin:
    print(f"read {line.strip()}", flush=True)
    if line.strip() == "quit":
        break
sys.exit(0)
