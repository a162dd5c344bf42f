"""`GET /api/feed?url=`: fetch an RSS, Atom or JSON feed the user chose, through the guard.

The URL comes from the page, so it is untrusted: the guard checks it and every redirect hop, no
key or caller header goes with it, and only feed content types up to FEED_MAX_BYTES come back.
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web

from keyside import __version__
from keyside.guard import GuardDenied
from keyside.sidecar.keystore import KeyStore
from keyside.sidecar.outbound import OutboundClients, outbound_error
from keyside.sidecar.responses import SECURITY_HEADERS, SidecarHttpError

logger = logging.getLogger(__name__)

# Decoded bytes; large news feeds are a few hundred KiB.
FEED_MAX_BYTES = 5 * 1024 * 1024
MAX_FEED_URL_CHARS = 2048
FEED_CONTENT_TYPES = frozenset({
    "application/rss+xml", "application/atom+xml", "application/rdf+xml", "application/xml", "text/xml",
    "application/feed+json", "application/json",
})
FEED_ACCEPT = ("application/rss+xml, application/atom+xml, application/feed+json, "
               "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8")
FEED_USER_AGENT = f"keyside/{__version__} feed-proxy"


def _feed_url(request: web.BaseRequest) -> str:
    values = request.query.getall("url", [])
    if len(values) != 1 or not values[0]:
        raise SidecarHttpError(400, "feed_url_missing", "Pass exactly one feed address as ?url=.",
                               fix="call /api/feed?url=<percent-encoded feed URL>")
    if len(values[0]) > MAX_FEED_URL_CHARS:
        raise SidecarHttpError(400, "feed_url_too_long", f"The feed URL is longer than {MAX_FEED_URL_CHARS} "
                               "characters.")
    return values[0]


async def fetch_feed(request: web.BaseRequest, clients: OutboundClients, keys: KeyStore,
                     cors_headers: dict[str, str]) -> web.Response:
    """Fetch the feed named by `?url=` and return it with its content type."""
    if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
        raise SidecarHttpError(405, "method_not_allowed", "The feed proxy accepts GET and HEAD only.",
                               headers={hdrs.ALLOW: "GET, HEAD"})
    url = _feed_url(request)
    headers = {hdrs.ACCEPT: FEED_ACCEPT, hdrs.USER_AGENT: FEED_USER_AGENT}
    try:
        async with clients.for_feeds().request("GET", url, headers=headers,
                                               max_response_bytes=FEED_MAX_BYTES) as upstream:
            if not 200 <= upstream.status < 300:
                raise SidecarHttpError(502, "upstream_status", f"The feed server returned status {upstream.status}.",
                                       fix="check the feed address")
            content_type = upstream.headers.get(hdrs.CONTENT_TYPE, "")
            media_type = content_type.split(";", 1)[0].strip().lower()
            if media_type not in FEED_CONTENT_TYPES:
                raise SidecarHttpError(502, "feed_content_type",
                                       f"The address returned {media_type or 'no content type'!r}, not a feed.",
                                       fix="use the address of an RSS, Atom or JSON feed, not of a web page")
            body = b"".join([chunk async for chunk in upstream.iter_chunks()])
    except GuardDenied as error:
        raise outbound_error(error, denied_status=403) from None

    response = web.Response(body=keys.pattern.scrub_bytes(body), content_type=media_type,
                            charset=_charset(content_type))
    response.headers.update(SECURITY_HEADERS)
    response.headers.update(cors_headers)
    return response


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        value = value.strip().strip('"')
        if name.strip().lower() == "charset" and value.replace("-", "").replace("_", "").isalnum():
            return value[:40]
    return None
