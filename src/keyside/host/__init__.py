"""The host: the trusted process that holds the vault, starts the sidecar and guards UI commands.

App code adds commands with the `command` decorator and starts a `Host` (or `run_headless`)
from Python; `keyside run` does the same from the command line.
"""

from keyside.host.channel import SidecarError
from keyside.host.host import Host
from keyside.host.ipc import APP_COMMANDS, ArgSpec, CallContext, Command, CommandRegistry, IpcError, command
from keyside.host.supervisor import SidecarState, SupervisorSettings

__all__ = [
    "APP_COMMANDS",
    "ArgSpec",
    "CallContext",
    "Command",
    "CommandRegistry",
    "Host",
    "IpcError",
    "SidecarError",
    "SidecarState",
    "SupervisorSettings",
    "command",
]
