"""One log line per event, to stderr, where gunicorn, Heroku and systemd collect it."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logger = logging.getLogger("voicebot")
    logger.setLevel(level)
    if not any(getattr(h, "_voicebot", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._voicebot = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    # Our handler is the one place voicebot's lines are written; the root
    # logger (which gunicorn or pytest may also feed) would print them twice.
    logger.propagate = False
    # The SDK and HTTP clients log request bodies at DEBUG: transcripts and
    # auth headers must not reach the logs through them.
    for noisy in ("anthropic", "httpx", "httpx2", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger(noisy).level))
