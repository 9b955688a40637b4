"""The WSGI entry point: ``gunicorn app:app`` and ``flask --app app run``."""

from voicebot import create_app

app = create_app()
