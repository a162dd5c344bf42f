"""Entry point of `python -m keyside.sidecar`; the host starts it and talks to it over stdin/stdout."""

from keyside.sidecar.server import main

raise SystemExit(main())
