# gunicorn reads this file by itself when started from this folder; the
# settings and the reasoning behind them are in voicebot/gunicorn_config.py.
from voicebot.gunicorn_config import *  # noqa: F401,F403
