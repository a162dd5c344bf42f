"""Entry point of `python -m keyside.sidecar`; the host starts it and talks to it over stdin/stdout."""

from keyside.sidecar.lifetime import set_parent_death_signal

# Armed before the slow imports below, so a host killed meanwhile still stops this process.
PARENT_DEATH_SIGNAL_ERROR = set_parent_death_signal()

from keyside.sidecar.server import main  # noqa: E402

raise SystemExit(main(PARENT_DEATH_SIGNAL_ERROR))
