"""Try the token where it must and must not work, as a `keyside exec` child in tests.

Prints one JSON line per attempt with the HTTP status and the sidecar's error reason, if any.
"""

import json
import os
import urllib.error
import urllib.request

token = os.environ["KEYSIDE_TOKEN"]
base = os.environ["KEYSIDE_URL"]
attempts = {
    "own_service": ("GET", f"{base}/api/svc/openai/v1/models", None),
    "other_service": ("POST", f"{base}/api/svc/anthropic/v1/messages", b"{}"),
    "ui_route_status": ("GET", f"{base}/api/status", None),
    "ui_route_feed": ("GET", f"{base}/api/feed?url=http%3A%2F%2F127.0.0.1%3A9%2Ffeed", None),
}
# urllib would otherwise use an HTTP proxy from the environment, but the sidecar is on loopback.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

for name, (method, url, body) in attempts.items():
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    # Every URL is the sidecar's http:// URL from KEYSIDE_URL.
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
    try:
        with opener.open(request, timeout=20) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    try:
        reason = json.loads(payload).get("error", {}).get("reason")
    except (ValueError, AttributeError):
        reason = None
    print(json.dumps({"attempt": name, "status": status, "reason": reason}), flush=True)
