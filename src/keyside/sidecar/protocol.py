"""The host-to-sidecar protocol: one JSON object per line on the sidecar's stdin and stdout.

The host starts `python -m keyside.sidecar` and writes a bootstrap message first:

    {"type": "bootstrap", "version": 1, "token": "<hex>", "nonce": "<hex>",
     "secrets": {"NAME": "value"}, "services": [<ServiceSpec.to_dict()>...],
     "origins": ["http://127.0.0.1:5173"], "preferred_port": 0,
     "allow_private": ["127.0.0.1:8080"], "nameservers": [], "log_dir": "/path" | null,
     "log_level": "INFO",
     "limits": {"connect_timeout_s": 10, "read_timeout_s": 120, "total_timeout_s": 600}}

`limits` is optional; each field overrides one outbound timeout of the guard (tests use short ones).

The sidecar binds 127.0.0.1, then writes exactly one line on stdout:

    {"type": "ready", "port": 40123, "pid": 4242, "proof": handshake_proof(token, nonce, port)}

or, when it cannot start, {"type": "fatal", "reason": "...", "message": "..."} with reason
`invalid_bootstrap` (or `invalid_secret_name`, `invalid_secret_value`), `bootstrap_timeout`
(nothing within 10 s) or `bind_failed`.

After that, stdin is the control channel. Every request has an integer `id` and gets one reply
line {"type": "reply", "id": N, "ok": true, ...} or {"type": "reply", "id": N, "ok": false,
"reason": "...", "message": "..."}. Requests:

    {"type": "set_secret", "id": N, "name": "NAME", "value": "..."}
    {"type": "delete_secret", "id": N, "name": "NAME"}
    {"type": "rotate_token", "id": N, "token": "<hex>"}        # replaces the UI session token
    {"type": "add_token", "id": N, "token_id": "exec-1", "token": "<hex>", "services": ["openai"]}
    {"type": "revoke_token", "id": N, "token_id": "exec-1"}
    {"type": "set_origins", "id": N, "origins": ["http://127.0.0.1:5173"]}  # replaces the CORS origins
    {"type": "validate", "id": N, "service": "openai", "value": "<candidate key>"}
        -> reply adds "result": "valid" | "invalid" | "unreachable", "reason", "status"
    {"type": "ping", "id": N}                                   -> reply adds "uptime_s"

Replies to set_secret and delete_secret add "name" (and "deleted": bool); add_token and
revoke_token add "token_id" (and "revoked": bool). Validation replies can arrive out of order.
A line that is not a JSON object with an integer `id` gets a reply with "id": null.

When stdin closes, the sidecar exits. No message on stdout ever contains a secret or a token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

PROTOCOL_VERSION = 1
# 256-bit tokens and nonces, hex-encoded.
TOKEN_BYTES = 32
NONCE_BYTES = 32
# One control line may carry a secret value; no real API key is near this size.
MAX_LINE_BYTES = 1024 * 1024
HANDSHAKE_LABEL = b"keyside-sidecar-handshake-v1"


def handshake_proof(token: str, nonce: str, port: int) -> str:
    """Return the hex HMAC-SHA256 under `token` that proves a listener on `port` holds the token.

    Binding the port into the MAC stops a squatter from replaying a proof seen for another port.
    """
    message = b"\x00".join([HANDSHAKE_LABEL, nonce.encode("ascii"), str(port).encode("ascii")])
    return hmac.new(token.encode("ascii"), message, hashlib.sha256).hexdigest()


def verify_handshake(token: str, nonce: str, port: int, proof: str) -> bool:
    """Return True when `proof` is the right proof for this token, nonce and port."""
    if not isinstance(proof, str):
        return False
    return hmac.compare_digest(handshake_proof(token, nonce, port), proof)


def encode_message(message: dict[str, Any]) -> bytes:
    """Return `message` as one JSON line."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode_message(line: bytes) -> dict[str, Any]:
    """Parse one JSON line into an object; raise ValueError on anything else."""
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"control message longer than {MAX_LINE_BYTES} bytes")
    message = json.loads(line)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("control message is not a JSON object with a string `type`")
    return message
