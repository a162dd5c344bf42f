"""Run argv[1:] through keyside.exec.run_child with the signal relay, without a host or sidecar.

Terminal tests start this on a pseudo-terminal, so the signal relay and job control of
`keyside exec` can be observed in isolation. Exits as keyside exec does.
"""

import os
import sys

from keyside.exec.child import SignalRelay, end_with_signal, run_child

with SignalRelay() as relay:
    exit_code = run_child(sys.argv[1:], dict(os.environ), relay)
if relay.terminal_signal is not None:
    end_with_signal(relay.terminal_signal)
sys.exit(exit_code)
