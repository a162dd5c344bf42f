"""The built-in UI commands. None returns a secret value, and none changes where a key is sent.

`local_api` is the only command that returns the session token, and only to windows with the
`data` capability. The `secrets` commands take secret names from the manifest's allow-list only
and are written to the audit log.
"""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path
from typing import Any

import keyside
from keyside.host.external import check_external_url
from keyside.host.ipc import ArgSpec, CallContext, CommandRegistry, IpcError, command

# Room for long JWT-style tokens; a longer value is not a pasted API key.
MAX_SECRET_VALUE_CHARS = 8192

BUILTIN_COMMANDS = CommandRegistry()

SECRET_NAME = ArgSpec(str, secret_name=True)
# A pasted key often ends with a line break; SecretManager trims it and rejects control
# characters inside the key.
SECRET_VALUE = ArgSpec(str, max_length=MAX_SECRET_VALUE_CHARS, allow_control_chars=True)


@command("runtime_info", capability=None, registry=BUILTIN_COMMANDS)
async def runtime_info(ctx: CallContext) -> dict[str, Any]:
    """Return the OS, versions, vault kind and sidecar state, for an about box or a support report.

    The vault is described by its kind (`system`, `file` or `memory`) and a display name. For a
    file vault the display name has the file's name but not its folder, so a page never learns
    the user's home path.
    """
    state = ctx.host.sidecar_state
    vault_kind = getattr(ctx.host.vault, "kind", None)
    vault_file_name = None
    if vault_kind == "file":
        vault_path = getattr(ctx.host.vault, "file_path", None)
        vault_file_name = Path(vault_path).name if vault_path else None
    display_names = {"system": "system keyring", "memory": "memory",
                     "file": f"encrypted file {vault_file_name}" if vault_file_name else "encrypted file"}
    return {
        "os": f"{platform.system()} {platform.release()}".strip(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "keyside": keyside.__version__,
        "vault": {"kind": vault_kind, "display_name": display_names.get(vault_kind, vault_kind),
                  "file_name": vault_file_name},
        "sidecar": {"state": state["state"], "reason": state["reason"], "message": state["message"],
                    "restarts": state["restarts"]},
    }


@command("app_config", capability=None, registry=BUILTIN_COMMANDS)
async def app_config(ctx: CallContext) -> dict[str, Any]:
    """Return the public part of the manifest, so pages can render their panels: no values, no token."""
    manifest = ctx.host.manifest
    return {
        "app": {"id": manifest.app_id, "name": manifest.name},
        "ui": manifest.ui,
        "windows": [{"label": w.label, "title": w.title, "page": w.page, "capabilities": list(w.capabilities)}
                    for w in manifest.windows.values()],
        "services": [{"name": s.name, "upstream": s.upstream, "secret": s.secret, "methods": list(s.methods),
                      "paths": list(s.paths), "validates": s.validate is not None}
                     for s in manifest.services.values()],
        "secrets": list(manifest.secrets),
    }


@command("local_api", capability="data", registry=BUILTIN_COMMANDS)
async def local_api(ctx: CallContext) -> dict[str, str]:
    """Return the sidecar's base URL and the session token, for the page's own fetches."""
    credentials = ctx.host.sidecar_credentials()
    if credentials is None:
        state = ctx.host.sidecar_state
        raise IpcError(f"The sidecar is not ready (state {state['state']}).", reason="sidecar_unavailable",
                       fix="retry when the sidecar state is ready")
    url, token = credentials
    return {"url": url, "token": token}


@command("list_secrets", capability="secrets", registry=BUILTIN_COMMANDS)
async def list_secrets(ctx: CallContext) -> list[dict[str, Any]]:
    """Return the name, description, configured flag and last validation of each declared secret.

    A key withheld because it was saved for other upstream origins also gets binding="mismatch"
    with its recorded and current origins. No row contains a value.
    """
    return ctx.host.secrets.listing()


@command("set_secret", capability="secrets", args={"name": SECRET_NAME, "value": SECRET_VALUE},
         registry=BUILTIN_COMMANDS)
async def set_secret(ctx: CallContext, name: str, value: str) -> dict[str, Any]:
    return await ctx.host.secrets.set(name, value)


@command("delete_secret", capability="secrets", args={"name": SECRET_NAME}, registry=BUILTIN_COMMANDS)
async def delete_secret(ctx: CallContext, name: str) -> dict[str, Any]:
    return await ctx.host.secrets.delete(name)


@command("validate_secret", capability="secrets",
         args={"name": SECRET_NAME, "value": ArgSpec(str, required=False, max_length=MAX_SECRET_VALUE_CHARS,
                                                     allow_control_chars=True)},
         registry=BUILTIN_COMMANDS)
async def validate_secret(ctx: CallContext, name: str, value: str | None = None) -> dict[str, Any]:
    return await ctx.host.secrets.validate(name, value)


# Control characters are left to check_external_url, so they are rejected with its reason.
@command("open_external", capability=None, args={"url": ArgSpec(str, allow_control_chars=True)},
         registry=BUILTIN_COMMANDS)
async def open_external(ctx: CallContext, url: str) -> dict[str, bool]:
    """Open an http, https or mailto URL in the system browser."""
    checked = check_external_url(url)
    opened = await asyncio.to_thread(ctx.host.url_opener, checked)
    return {"opened": bool(opened)}
