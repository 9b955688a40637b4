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
    # The SDK and HTTP clients log every request at INFO and request bodies
    # (transcripts) at DEBUG: our own lines already say what happened.
    for chatty in ("anthropic", "httpx", "httpx2", "httpcore", "httpcore2", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
