"""A small stand-in sidecar for supervisor tests: it speaks the stdin/stdout protocol and misbehaves on request.

    python ipc_fake_sidecar.py [--mode MODE] [--delay-s S] [--claim-port P] [--record PATH]

Modes:
    ok            bind 127.0.0.1 (the preferred port, else any), report ready with a correct proof,
                  reply to control requests
    silent        read the bootstrap, then never write anything
    slow          like ok, after --delay-s seconds
    wrong_proof   report ready with a proof that does not match
    claim_port    report --claim-port P as its port, with a proof for the port it really bound
    fatal         write a fatal line and exit with status 3
    exit          exit with status 1 right after reading the bootstrap
    leak_stderr   write the token, every secret and a URL with a query to stderr, then exit with
                  status 1 (the host must redact all of them before it logs the lines)
    garbage       write a line that is not JSON
    crash_after   like ok, then exit with status 1 after --delay-s seconds
    no_origins    like ok, but reject set_origins as an unknown request type
    hang          like ok, but ignore SIGTERM and keep running after stdin closes (only SIGKILL ends it)

The HTTP listener answers every request with 200 and {"ok": true} when the request carries
`Authorization: Bearer <current token or an exec token>`, else 401. `--record PATH` appends one
JSON line per event (start with environment and argv, control request types and names, HTTP
auth outcomes); secret values and tokens are never recorded, only whether they matched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from keyside.sidecar.protocol import decode_message, encode_message, handshake_proof  # noqa: E402


class FakeSidecar:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.token = ""
        self.exec_tokens: dict[str, str] = {}
        self.secrets: dict[str, str] = {}

    def record(self, event: dict) -> None:
        if self.args.record:
            with open(self.args.record, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"pid": os.getpid(), **event}) + "\n")

    def write(self, message: dict) -> None:
        sys.stdout.buffer.write(encode_message(message))
        sys.stdout.buffer.flush()

    async def handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        auth = ""
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization":
                auth = value.strip()
        valid = {self.token, *self.exec_tokens.values()} - {""}
        ok = auth.startswith("Bearer ") and auth[len("Bearer "):] in valid
        self.record({"event": "http", "authorized": ok})
        body = b'{"ok": true}' if ok else b'{"error": {"reason": "unauthorized"}}'
        status = b"200 OK" if ok else b"401 Unauthorized"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    def reply(self, message: dict) -> dict:
        kind = message["type"]
        self.record({"event": "control", "type": kind, "name": message.get("name"),
                     "token_id": message.get("token_id")})
        if kind == "set_secret":
            self.secrets[message["name"]] = message["value"]
        elif kind == "delete_secret":
            self.secrets.pop(message["name"], None)
        elif kind == "rotate_token":
            self.token = message["token"]
        elif kind == "add_token":
            self.exec_tokens[message["token_id"]] = message["token"]
        elif kind == "revoke_token":
            self.exec_tokens.pop(message["token_id"], None)
        elif kind == "validate":
            value = message.get("value") or ""
            result = "valid" if value.startswith("valid") else "invalid"
            return {"ok": True, "result": result, "reason": None if result == "valid" else "upstream_status",
                    "status": 200 if result == "valid" else 401}
        elif kind == "set_origins" and self.args.mode != "no_origins":
            pass
        elif kind != "ping":
            return {"ok": False, "reason": "unknown_type", "message": f"unknown request type {kind}"}
        return {"ok": True}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader(limit=2 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        bootstrap = decode_message(await stdin.readline())
        self.token = bootstrap["token"]
        self.secrets = dict(bootstrap.get("secrets") or {})
        self.record({"event": "start", "env": dict(os.environ), "argv": sys.argv,
                     "secret_names": sorted(self.secrets), "origins": bootstrap.get("origins"),
                     "preferred_port": bootstrap.get("preferred_port")})

        mode = self.args.mode
        if mode == "exit":
            return 1
        if mode == "leak_stderr":
            print(f"token={self.token}", file=sys.stderr)
            for name, value in self.secrets.items():
                print(f"secret {name}={value}", file=sys.stderr)
            print("fetching https://upstream.invalid/v1?api_key=query-secret-1234", file=sys.stderr, flush=True)
            return 1
        if mode == "fatal":
            self.write({"type": "fatal", "reason": "port_unavailable", "message": "no port to bind"})
            return 3
        if mode == "garbage":
            sys.stdout.buffer.write(b"this is not json\n")
            sys.stdout.buffer.flush()
        if mode in ("silent", "garbage"):
            await asyncio.sleep(3600)
            return 0
        if mode == "slow":
            await asyncio.sleep(self.args.delay_s)
        if mode == "hang":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

        try:
            server = await asyncio.start_server(self.handle_http, "127.0.0.1", bootstrap.get("preferred_port") or 0)
        except OSError:
            server = await asyncio.start_server(self.handle_http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proof = handshake_proof(self.token, bootstrap["nonce"], port)
        if mode == "wrong_proof":
            proof = "0" * len(proof)
        reported = self.args.claim_port if mode == "claim_port" else port
        self.write({"type": "ready", "port": reported, "proof": proof})

        if mode == "crash_after":
            loop.call_later(self.args.delay_s, os._exit, 1)
        while True:
            line = await stdin.readline()
            if not line and mode == "hang":
                await asyncio.sleep(3600)
            if not line:
                return 0
            message = decode_message(line)
            self.write({"type": "reply", "id": message.get("id"), **self.reply(message)})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--claim-port", type=int, default=0)
    parser.add_argument("--record")
    return asyncio.run(FakeSidecar(parser.parse_args()).run())


if __name__ == "__main__":
    raise SystemExit(main())
