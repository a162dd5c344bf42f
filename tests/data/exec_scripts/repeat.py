"""Call the openai service once per line read from stdin, as a `keyside exec` child in tests.

Prints one JSON line per call with the HTTP status, or status 0 and the error when the sidecar
cannot be reached. Exits 0 at the end of stdin.
"""

import json
import os
import sys
import urllib.error
import urllib.request

url = os.environ["KEYSIDE_URL_OPENAI"] + "/v1/models"
headers = {"Authorization": f"Bearer {os.environ['KEYSIDE_TOKEN']}"}
# urllib would otherwise use an HTTP proxy from the environment, but the sidecar is on loopback.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

for _line in sys.stdin:
    try:
        # The URL is the sidecar's http:// URL from KEYSIDE_URL_OPENAI.
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:  # noqa: S310
            result = {"status": response.status}
    except urllib.error.HTTPError as error:
        result = {"status": error.code}
    except OSError as error:
        result = {"status": 0, "error": type(error).__name__}
    print(json.dumps(result), flush=True)
