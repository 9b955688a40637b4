"""The WSGI entry point: ``gunicorn app:app`` and ``flask --app app run``."""

import sys

from voicebot import create_app
from voicebot.exceptions import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # One line naming the setting, not a traceback (gunicorn's own start path
    # checks the same settings first; this is for ``flask run``).
    sys.stderr.write(f"voicebot refuses to start: {exc}\n")
    sys.exit(2)

if "gunicorn" not in sys.modules:
    # flask run: no worker hook starts the background work (gunicorn's post_worker_init does).
    from voicebot import background

    background.start(app)
