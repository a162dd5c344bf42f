"""Write what a `keyside exec` child can see to the JSON file in argv[1], for tests.

The script records its environment (as Python and as /proc/self/environ show it) and its argv
(sys.argv and /proc/self/cmdline), so a test can assert that no secret value is in them.
"""

import json
import os
import sys


def read_proc(name: str) -> str:
    try:
        with open(f"/proc/self/{name}", "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


report = {
    "environ": dict(os.environ),
    "proc_environ": read_proc("environ"),
    "argv": sys.argv,
    "proc_cmdline": read_proc("cmdline"),
    "pgid": os.getpgrp(),
    "parent_pgid": os.getpgid(os.getppid()),
}
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(report, handle)
print("report written")
