"""Run a host in its own process, for tests that kill the host or watch it exit.

    python ipc_host_script.py APP_FOLDER LOG_DIR MODE

Modes:
    wait       start a Host, print {"pid": sidecar pid, "url": ...} as one line, then sleep until killed
    exit       the same, then exit without calling stop() (atexit must stop the sidecar)
    headless   run_headless() with a memory vault: prints the sidecar URL, stops on SIGINT or SIGTERM

The vault is a memory vault holding ECHO_KEY_VALUE, so no test touches a real keyring here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from keyside.host import Host
from keyside.host.headless import run_headless
from keyside.manifest import load_manifest
from keyside.vault import MemoryStore, Vault

ECHO_KEY_VALUE = "ek-script-0123456789-abcdef"


def main() -> int:
    folder, log_dir, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    manifest = load_manifest(folder)
    vault = Vault(manifest, MemoryStore({"ECHO_KEY": ECHO_KEY_VALUE}))
    if mode == "headless":
        return run_headless(manifest, vault, log_dir=log_dir)

    host = Host(manifest, vault, log_dir=log_dir)
    host.add_page_origin("http://127.0.0.1:8765")
    host.start()
    print(json.dumps({"pid": host.sidecar_state["pid"], "url": host.sidecar_url}), flush=True)
    if mode == "exit":
        return 0
    while True:
        time.sleep(60)


if __name__ == "__main__":
    raise SystemExit(main())
