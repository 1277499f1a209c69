"""The command line's logging: one handler on the console (unless the host program set logging
up), -v/-q levels, and every line scrubbed of URL credentials (an exception may quote an
endpoint with `user:pass@`) and of the colour codes of Ray's error texts."""

from __future__ import annotations

import logging

from condlabel.config.secrets import strip_userinfo
from condlabel.failures import strip_ansi

log = logging.getLogger("condlabel")


def setup_logging(quiet: bool, verbose: bool = False) -> None:
    """-q: warnings only; -v: condlabel's debug lines and Ray's own logs on the console."""
    from condlabel.ray_runtime import set_verbose

    root = logging.getLogger()
    if not root.handlers:  # else someone (a test, an embedding program) set logging up
        handler = logging.StreamHandler()
        handler.setFormatter(_ScrubbingFormatter())
        root.addHandler(handler)
        root.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(isinstance(f, _Scrubber) for f in log.filters):
        log.addFilter(_Scrubber())
    # Set both ways: tests call main() many times in one process.
    log.setLevel(logging.DEBUG if verbose else logging.NOTSET)
    set_verbose(verbose)


def _scrub(text: str) -> str:
    return strip_userinfo(strip_ansi(text))


class _ScrubbingFormatter(logging.Formatter):
    """Log lines without URL credentials (an exception may quote an endpoint with user:pass@)
    and without the colour codes of Ray's error texts."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record))


class _Scrubber(logging.Filter):
    """The same for condlabel's own records, whatever handler prints them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _scrub(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _scrub(logging.Formatter().formatException(record.exc_info))
        return True
