"""keyside keeps third-party API keys out of web UIs.

Secrets live in the OS vault, a trusted host process guards every call from the UI, and a
sidecar on 127.0.0.1 injects keys into outbound requests that it checks against SSRF.
"""

__version__ = "0.1.0"
