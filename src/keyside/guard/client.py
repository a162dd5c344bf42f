"""GuardedClient: the one HTTP client for every outbound request keyside makes.

Order of checks for each hop:
  1. URL check (check_url): scheme, userinfo, characters, host spelling; the normalised URL is
     what gets fetched.
  2. Resolution and classification of every answer under the policy (PinningResolver); one
     denied answer denies the hop before any connection is opened.
  3. aiohttp dials only the validated addresses (pinned for this request), and the socket
     factory checks each address again before connecting.
  4. Redirects are followed here, not by aiohttp, and each hop starts again at step 1.
  5. The body streams through a decoder that caps decoded bytes, under an idle-read timeout
     and one total deadline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from keyside import __version__
from keyside.guard.addresses import ALLOW_CONFIGURED, ALLOW_PUBLIC, Verdict
from keyside.guard.body import ACCEPT_ENCODING, BodyDecoder, parse_content_encoding
from keyside.guard.concurrency import ConcurrencyLimiter
from keyside.guard.deadline import Deadline
from keyside.guard.errors import GuardDenied
from keyside.guard.pinning import PinningResolver, _denied
from keyside.guard.policy import GuardPolicy
from keyside.guard.redirects import REDIRECT_STATUSES, plan_redirect
from keyside.guard.resolve import Resolver, SystemResolver
from keyside.guard.urls import CheckedUrl, check_url

logger = logging.getLogger(__name__)

# RFC 9110 methods plus PATCH; a custom method could smuggle another request past a proxy.
ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Headers the guard sets itself or that describe one connection only (RFC 9110 section 7.6.1).
CALLER_HEADERS_DROPPED = frozenset({
    "host", "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "content-length", "accept-encoding",
})
USER_AGENT = f"keyside/{__version__}"
# Characters that would end a header line or the header block on the wire.
_HEADER_BREAK = re.compile("[\r\n\0]")
# Statuses whose responses have no body, whatever their headers announce.
NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True)
class CheckResult:
    """The guard's verdict on a URL, computed without sending a request."""

    allowed: bool
    reason: str
    message: str
    url: str | None  # normalised URL without its query, None when the URL check failed
    host: str | None
    port: int | None
    addresses: tuple[Verdict, ...] = ()

    @property
    def verdict(self) -> str:
        return "allow" if self.allowed else "deny"


class GuardedResponse:
    """An upstream response whose body is read through the guard's limits.

    `headers` describe the decoded body: when the guard removed a content coding,
    Content-Encoding and Content-Length are left out.
    """

    def __init__(self, response: aiohttp.ClientResponse, target: CheckedUrl, *, method: str,
                 encodings: list[str], max_response_bytes: int, loop: asyncio.AbstractEventLoop,
                 deadline: float, redirects: int, on_close: Callable[[], None] | None = None):
        self._response = response
        self._loop = loop
        self._target = target
        self._method = method
        self._encodings = encodings
        self._max_bytes = max_response_bytes
        self._deadline = deadline
        self._on_close = on_close
        self._started = False
        self._closed = False
        self.status = response.status
        self.reason = response.reason
        self.url = target.url
        self.redirects = redirects
        if encodings:
            headers = CIMultiDict(response.headers)
            headers.popall("Content-Encoding", None)
            headers.popall("Content-Length", None)
            self.headers = CIMultiDictProxy(headers)
        else:
            self.headers = response.headers  # read-only already, and describes the body as it is

    def __repr__(self) -> str:
        return f"<GuardedResponse {self.status} {self._target.scheme}://{self._target.host_port}>"

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yield decoded body bytes as they arrive; raise GuardDenied past a limit.

        Raises `response_too_large` once decoded (or raw) bytes pass the cap, `timeout_read`
        when the upstream stays silent for the idle-read timeout, `timeout_total` at the
        deadline, and `response_invalid` or `response_invalid_encoding` on a broken body.
        """
        if self._started:
            raise RuntimeError("the response body can be read only once")
        self._started = True
        if self._method == "HEAD" or self.status in NO_BODY_STATUSES:
            return
        declared = self._response.content_length
        if declared is not None and declared > self._max_bytes:
            raise self._too_large(f"announces {declared} bytes")

        # Without a content coding the raw bytes are the decoded bytes, so the raw count covers
        # the cap and the body skips the decoder.
        decoder = BodyDecoder(self._encodings) if self._encodings else None
        raw_total = 0
        decoded_total = 0
        while True:
            chunk = await self._read_some()
            raw_total += len(chunk)
            if raw_total > self._max_bytes:
                raise self._too_large("sent more")
            if decoder is None:
                if not chunk:
                    return
                yield chunk
                continue

            # An empty chunk is the end of the body, where the decoder flushes what it buffered.
            pieces = decoder.feed(chunk) if chunk else decoder.finish()
            for piece in pieces:
                decoded_total += len(piece)
                if decoded_total > self._max_bytes:
                    raise self._too_large("decodes to more")
                yield piece
            if not chunk:
                return

    async def read(self) -> bytes:
        """Return the whole decoded body, under the same limits as iter_chunks."""
        if self._encodings or self._started:
            return b"".join([piece async for piece in self.iter_chunks()])
        # Without a content coding this is iter_chunks' loop without an async generator, which
        # costs a few microseconds per body, and most bodies arrive in one piece.
        self._started = True
        if self._method == "HEAD" or self.status in NO_BODY_STATUSES:
            return b""
        declared = self._response.content_length
        if declared is not None and declared > self._max_bytes:
            raise self._too_large(f"announces {declared} bytes")
        chunks: list[bytes] = []
        total = 0
        while chunk := await self._read_some():
            total += len(chunk)
            if total > self._max_bytes:
                raise self._too_large("sent more")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _read_some(self) -> bytes:
        content = self._response.content
        try:
            if self._loop.time() >= self._deadline:
                raise TimeoutError
            # Bytes that already arrived are taken without arming a timer, because a small body
            # often comes in the packet of the headers. Only a read that has to wait runs under
            # the deadline.
            data = content.read_nowait()
            if data or content.is_eof():
                return data
            with Deadline(self._loop, self._deadline):
                return await content.readany()
        except aiohttp.SocketTimeoutError:
            raise GuardDenied("timeout_read", f"{self._target.host_port} sent nothing for the idle-read "
                              "timeout.") from None
        except TimeoutError:
            raise GuardDenied("timeout_total", f"Response from {self._target.host_port} did not finish "
                              "before the total deadline.") from None
        except aiohttp.ClientPayloadError as error:
            raise GuardDenied("response_invalid", f"Response body from {self._target.host_port} is "
                              f"broken: {type(error).__name__}.") from None
        except aiohttp.ClientError as error:
            raise GuardDenied("upstream_failed", f"Reading from {self._target.host_port} failed: "
                              f"{type(error).__name__}.") from None

    def _too_large(self, detail: str) -> GuardDenied:
        self._abort()
        return GuardDenied("response_too_large", f"Response from {self._target.host_port} {detail} than "
                           f"{self._max_bytes} bytes.",
                           fix="Request a smaller page of data, or raise max_response_bytes for this call.")

    def _abort(self) -> None:
        # Closing (not releasing) drops the connection, so the rest of the body is never read.
        self._response.close()

    async def close(self) -> None:
        """Release the connection and the concurrency slot; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
        if self._on_close is not None:
            self._on_close()


class GuardedClient:
    """An SSRF-checked HTTP client built on aiohttp; see the module docstring for the checks."""

    def __init__(self, policy: GuardPolicy | None = None, resolver: Resolver | None = None, *,
                 ssl_context: ssl.SSLContext | None = None):
        """`ssl_context` replaces the default trust store (for a private CA or a test CA).

        Certificate and host name checks stay on: a context with CERT_NONE or without
        check_hostname is rejected, because the guard dials an address and relies on TLS to
        prove that the peer is the host the URL names.
        """
        if ssl_context is not None and (ssl_context.verify_mode != ssl.CERT_REQUIRED
                                        or not ssl_context.check_hostname):
            raise ValueError("ssl_context must verify certificates and host names")
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self.policy = policy or GuardPolicy()
        self.resolver = resolver or SystemResolver()
        self._pinning = PinningResolver(self.resolver, self.policy)
        limits = self.policy.limits
        self._limiter = ConcurrencyLimiter(limits.max_concurrent, limits.max_concurrent_per_host)
        self._session: aiohttp.ClientSession | None = None

    @property
    def pinning(self) -> PinningResolver:
        return self._pinning

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            limits = self.policy.limits
            connector = aiohttp.TCPConnector(
                resolver=self._pinning,
                ssl=self._ssl,  # TLS uses the URL's host name for SNI and the certificate check
                use_dns_cache=False,  # PinningResolver caches validated answers by their TTL
                socket_factory=self._pinning.socket_factory,
                happy_eyeballs_delay=None,  # try validated addresses in order, IPv4 first
                limit=0,  # ConcurrencyLimiter applies the caps, in arrival order
                limit_per_host=0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # one upstream's cookies never reach another
                trust_env=False,  # an environment proxy would dial on our behalf, unchecked
                auto_decompress=False,  # body.py decodes under the byte cap
                timeout=aiohttp.ClientTimeout(total=None, connect=None,
                                              sock_connect=limits.connect_timeout_s,
                                              sock_read=limits.read_timeout_s),
                requote_redirect_url=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._pinning.close()

    async def __aenter__(self) -> GuardedClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def check(self, url: str) -> CheckResult:
        """Check `url` and resolve its host as a request would, without sending a request."""
        try:
            target = check_url(url)
        except GuardDenied as error:
            return CheckResult(False, error.reason, str(error), None, None, None)
        shown_url = target.url.split("?", 1)[0]
        try:
            verdicts = await self._pinning.inspect(target.host, target.port)
        except GuardDenied as error:
            return CheckResult(False, error.reason, str(error), shown_url, target.host, target.port)
        denied = next((verdict for verdict in verdicts if not verdict.allowed), None)
        if denied is not None:
            error = _denied(target.host, target.port, denied)
            return CheckResult(False, error.reason, str(error), shown_url, target.host, target.port, verdicts)
        configured = any(verdict.reason == ALLOW_CONFIGURED for verdict in verdicts)
        reason = ALLOW_CONFIGURED if configured else ALLOW_PUBLIC
        message = f"{target.host_port} may be requested; every resolved address is allowed."
        return CheckResult(True, reason, message, shown_url, target.host, target.port, verdicts)

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                data: bytes | AsyncIterable[bytes] | None = None, follow_redirects: bool = True,
                max_response_bytes: int | None = None, sensitive_headers: Collection[str] = (),
                sensitive_query_params: Collection[str] = (),
                sensitive_values: Collection[str] = ()) -> AbstractAsyncContextManager[GuardedResponse]:
        """Send one request through the guard; use as `async with client.request(...) as response`.

        `sensitive_headers` and `sensitive_query_params` are dropped when a redirect changes
        scheme or origin (Authorization, Proxy-Authorization and Cookie always are).
        A cross-origin redirect whose URL still contains one of `sensitive_values` is denied
        with `redirect_leaks_secret`. Every failure raises GuardDenied with a named reason.
        """
        return _RequestContext(self, method, url, headers, data, follow_redirects, max_response_bytes,
                               tuple(sensitive_headers), tuple(sensitive_query_params), tuple(sensitive_values))

    async def _send(self, method: str, url: str, headers: Mapping[str, str] | None,
                    data: bytes | AsyncIterable[bytes] | None, follow_redirects: bool,
                    max_response_bytes: int | None, sensitive_headers: tuple[str, ...],
                    sensitive_query_params: tuple[str, ...],
                    sensitive_values: tuple[str, ...]) -> GuardedResponse:
        target = check_url(url)
        method = _check_method(method)
        request_headers = _prepare_headers(headers)
        limits = self.policy.limits
        max_bytes = limits.max_response_bytes if max_response_bytes is None else max_response_bytes
        if max_bytes < 0:
            raise ValueError(f"max_response_bytes must be 0 or more, got {max_bytes}")
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        redirects = 0
        body = data

        while True:
            host = target.host
            await self._limiter.acquire(host)
            try:
                if deadline is None:
                    # The deadline starts once the request holds a slot, so queueing never
                    # turns into a timeout.
                    deadline = loop.time() + limits.total_timeout_s
                response = await self._open(method, target, request_headers, body, loop, deadline)
            except BaseException:
                self._limiter.release(host)
                raise

            location = response.headers.get("Location")
            if not (follow_redirects and response.status in REDIRECT_STATUSES and location):
                try:
                    encodings = [] if method == "HEAD" else parse_content_encoding(
                        response.headers.get("Content-Encoding"))
                except BaseException:
                    response.close()
                    self._limiter.release(host)
                    raise
                return GuardedResponse(response, target, method=method, encodings=encodings,
                                       max_response_bytes=max_bytes, loop=loop, deadline=deadline,
                                       redirects=redirects,
                                       on_close=functools.partial(self._limiter.release, host))

            try:
                if redirects >= limits.max_redirects:
                    raise GuardDenied("redirect_limit", f"More than {limits.max_redirects} redirects, the last "
                                      f"from {target.host_port}.", fix="Request the final URL directly.")
                hop = plan_redirect(target, method, response.status, location, request_headers,
                                    sensitive_headers=sensitive_headers,
                                    sensitive_query_params=sensitive_query_params,
                                    sensitive_values=sensitive_values)
                if hop.keep_body and body is not None and not isinstance(body, bytes | bytearray):
                    raise GuardDenied("redirect_body_not_replayable",
                                      f"{target.host_port} answered {response.status}, which repeats the request "
                                      "body, but the body was a stream that cannot be sent twice.",
                                      fix="Send the body as bytes, or request the final URL directly.")
            finally:
                response.close()
                self._limiter.release(host)
            logger.info("redirect status=%s from=%s to=%s cross_origin=%s", response.status,
                        target.host_port, hop.target.host_port, hop.cross_origin)
            redirects += 1
            target = hop.target
            method = hop.method
            request_headers = hop.headers
            body = body if hop.keep_body else None

    async def _open(self, method: str, target: CheckedUrl, headers: CIMultiDict[str],
                    body: bytes | AsyncIterable[bytes] | None, loop: asyncio.AbstractEventLoop,
                    deadline: float) -> aiohttp.ClientResponse:
        # A cached answer is taken without creating lookup()'s coroutine.
        verdicts = (self._pinning.cached_lookup(target.host, target.port)
                    or await self._pinning.lookup(target.host, target.port))
        token = self._pinning.pin(target.host, target.port, verdicts)
        try:
            with Deadline(loop, deadline):
                return await self._get_session().request(
                    method, URL(target.url, encoded=True), headers=headers, data=body,
                    allow_redirects=False, auto_decompress=False,
                )
        except GuardDenied:
            raise
        except aiohttp.ConnectionTimeoutError:
            raise GuardDenied("timeout_connect", f"Connecting to {target.host_port} timed out.") from None
        except aiohttp.SocketTimeoutError:
            raise GuardDenied("timeout_read", f"{target.host_port} sent no response headers within the "
                              "idle-read timeout.") from None
        except TimeoutError:
            raise GuardDenied("timeout_total", f"{target.host_port} did not respond before the total "
                              "deadline.") from None
        except aiohttp.ClientConnectorCertificateError:
            raise GuardDenied("tls_certificate", f"TLS certificate of {target.host_port} is not valid for "
                              "that host.") from None
        except aiohttp.ClientConnectorSSLError:
            raise GuardDenied("tls_failed", f"TLS handshake with {target.host_port} failed.") from None
        except aiohttp.ClientConnectorError as error:
            raise GuardDenied("connect_failed", f"Connecting to {target.host_port} failed: "
                              f"{error.os_error.strerror or type(error.os_error).__name__}.") from None
        except aiohttp.ClientResponseError as error:
            # aiohttp's parser message quotes the offending bytes, which may echo a key, so only
            # the error type reaches the message.
            raise GuardDenied("response_invalid", f"{target.host_port} sent an invalid HTTP response "
                              f"({type(error).__name__}).") from None
        except aiohttp.ClientError as error:
            raise GuardDenied("upstream_failed", f"Request to {target.host_port} failed: "
                              f"{type(error).__name__}.") from None
        finally:
            self._pinning.unpin(token)


class _RequestContext(AbstractAsyncContextManager[GuardedResponse]):
    """`async with client.request(...)`: send on entry, log a denial, close the response on exit.

    A plain class that calls GuardedClient._send directly. contextlib.asynccontextmanager, or a
    functools.partial in between, would add a generator or a call to every request.
    """

    __slots__ = ("_client", "_args", "_response")

    def __init__(self, client: GuardedClient, *args: Any):
        self._client = client
        self._args = args
        self._response: GuardedResponse | None = None

    async def __aenter__(self) -> GuardedResponse:
        try:
            self._response = await self._client._send(*self._args)
        except GuardDenied as error:
            method, url = self._args[0], self._args[1]
            logger.warning("outbound request failed reason=%s method=%s %s", error.reason, method, _host_of(url))
            raise
        return self._response

    async def __aexit__(self, *exc_info: object) -> None:
        if self._response is not None:
            await self._response.close()


def _check_method(method: str) -> str:
    upper = method.upper() if isinstance(method, str) else ""
    if upper not in ALLOWED_METHODS:
        raise GuardDenied("method_not_allowed", f"HTTP method {method!r} is not allowed.",
                          fix=f"Use one of: {', '.join(sorted(ALLOWED_METHODS))}.")
    return upper


def _prepare_headers(headers: Mapping[str, str] | None) -> CIMultiDict[str]:
    prepared: CIMultiDict[str] = CIMultiDict()
    for name, value in (headers or {}).items():
        if _HEADER_BREAK.search(name) or _HEADER_BREAK.search(value):
            raise GuardDenied("header_invalid", f"Header {name!r} contains a line break or NUL.",
                              fix="Remove line breaks from header names and values.")
        if name.lower() not in CALLER_HEADERS_DROPPED:
            prepared.add(name, value)
    prepared["Accept-Encoding"] = ACCEPT_ENCODING
    prepared.setdefault("User-Agent", USER_AGENT)
    return prepared


def _host_of(url: str) -> str:
    """Return "target=HOST:PORT" for a log line, or a placeholder when the URL did not parse."""
    try:
        return f"target={check_url(url).host_port}"
    except GuardDenied:
        return "target=(invalid URL)"
