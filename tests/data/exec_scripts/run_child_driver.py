"""Run argv[1:] through keyside.exec.run_child with the signal relay, without a host or sidecar.

Terminal tests start this in a new session on a pseudo-terminal, so the terminal hand-off and
job control of `keyside exec` can be observed in isolation. Exits with the child's exit code.
"""

import os
import sys

from keyside.exec import SignalRelay, run_child

with SignalRelay() as relay:
    sys.exit(run_child(sys.argv[1:], dict(os.environ), relay))
