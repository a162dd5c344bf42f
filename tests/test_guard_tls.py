"""GuardedClient over TLS: the dialled address is the checked one, while SNI and the certificate
check use the URL's host name.

The upstream is our own aiohttp server on 127.0.0.1 with a certificate from a throwaway CA made
here. "api.test" resolves through StaticResolver and is reached through an explicit allowance.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyside.guard import GuardDenied, GuardedClient, GuardLimits, GuardPolicy, StaticResolver

LIMITS = GuardLimits(connect_timeout_s=2.0, read_timeout_s=5.0, total_timeout_s=10.0)


@dataclass
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(tmp_path: Path, server_names: list[str]) -> Pki:
    """Write a CA and a server certificate for `server_names`; return the CA file and a server context."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("keyside test CA")).issuer_name(_name("keyside test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(server_names[0])).issuer_name(ca_cert.subject)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in server_names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = tmp_path / "server.pem"
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file = tmp_path / "server.key"
    key_file.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    return Pki(ca_file, server_context)


@dataclass
class TlsUpstream:
    port: int
    seen: list[dict[str, str | None]]


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[tuple[Pki, TlsUpstream]]:
    pki = make_pki(tmp_path, ["api.test"])
    seen: list[dict[str, str | None]] = []
    server_names: list[str | None] = []
    pki.server_context.sni_callback = lambda sock, name, context: server_names.append(name)

    async def handle(request: web.Request) -> web.Response:
        seen.append({"host": request.headers.get("Host"), "sni": server_names[-1] if server_names else None})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/v1/ping", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the OS-assigned port
    try:
        yield pki, TlsUpstream(port, seen)
    finally:
        await runner.cleanup()


def _client(pki: Pki, port: int, host: str = "api.test") -> GuardedClient:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    policy = GuardPolicy.from_strings([f"{host}:{port}"], limits=LIMITS)
    return GuardedClient(policy, StaticResolver({host: ["127.0.0.1"]}), ssl_context=context)


async def test_tls_uses_name_for_sni_and_host(tls_upstream) -> None:
    pki, upstream = tls_upstream
    async with _client(pki, upstream.port) as client:
        async with client.request("GET", f"https://api.test:{upstream.port}/v1/ping") as response:
            assert response.status == 200
            assert await response.read() == b'{"ok": true}'
    assert upstream.seen == [{"host": f"api.test:{upstream.port}", "sni": "api.test"}]


async def test_tls_certificate_for_other_name_denied(tls_upstream) -> None:
    pki, upstream = tls_upstream
    async with _client(pki, upstream.port, host="other.test") as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"https://other.test:{upstream.port}/v1/ping"):
                pass
    assert caught.value.reason == "tls_certificate"
    assert upstream.seen == []


async def test_tls_untrusted_ca_denied(tls_upstream) -> None:
    _, upstream = tls_upstream
    policy = GuardPolicy.from_strings([f"api.test:{upstream.port}"], limits=LIMITS)
    # The default trust store does not contain the throwaway CA.
    async with GuardedClient(policy, StaticResolver({"api.test": ["127.0.0.1"]})) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"https://api.test:{upstream.port}/v1/ping"):
                pass
    assert caught.value.reason == "tls_certificate"
    assert upstream.seen == []


@pytest.mark.parametrize("weaken", ["no-hostname-check", "no-verify"])
def test_tls_context_without_checks_rejected(weaken: str) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    if weaken == "no-verify":
        context.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="must verify"):
        GuardedClient(ssl_context=context)

