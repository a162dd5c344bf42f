"""`keyside exec`: give a command-line tool, script or agent a sidecar URL and a scoped token
in place of API keys.

The command runs as a child with KEYSIDE_URL, KEYSIDE_TOKEN and KEYSIDE_URL_<SERVICE> in its
environment. The token works only for the selected services and only while keyside exec runs.
The keys stay in the vault and the sidecar, which sends each one only to its service's fixed
upstream.
"""

from keyside.exec.child import EXIT_SIGNAL_BASE, RELAYED_SIGNALS, Interrupted, SignalRelay, run_child
from keyside.exec.environment import (
    ENV_SERVICE_URL_PREFIX,
    ENV_TOKEN,
    ENV_URL,
    ChildEnvironment,
    ExecError,
    build_child_env,
    check_arguments,
    select_services,
    service_env_name,
)
from keyside.exec.runner import SIDECAR_START_TIMEOUT_S, run_exec

__all__ = [
    "ENV_SERVICE_URL_PREFIX",
    "ENV_TOKEN",
    "ENV_URL",
    "EXIT_SIGNAL_BASE",
    "RELAYED_SIGNALS",
    "SIDECAR_START_TIMEOUT_S",
    "ChildEnvironment",
    "ExecError",
    "Interrupted",
    "SignalRelay",
    "build_child_env",
    "check_arguments",
    "run_child",
    "run_exec",
    "select_services",
    "service_env_name",
]
