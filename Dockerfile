# voicebot in a container: the Procfile's command, as a user without privileges,
# healthy when /readyz says the store and the model's key are fine.
#
#   docker build -t voicebot .
#   docker run -e WEBHOOK_TOKEN=... -e ANTHROPIC_API_KEY=... -p 8000:8000 voicebot
#
# BASE is any image with Python 3.11 or newer and its venv module (a machine
# without a registry can name one it built: see docs in the README).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/voicebot/bin:$PATH PORT=8000

WORKDIR /app
# The pinned dependencies first: a change to voicebot's code does not install them again.
COPY requirements.txt ./
RUN python3 -m venv /opt/voicebot && pip install -r requirements.txt
COPY setup.cfg pyproject.toml README.md app.py gunicorn.conf.py Procfile ./
COPY voicebot ./voicebot
RUN pip install --no-deps . && useradd --system --uid 10001 --no-create-home voicebot

USER voicebot
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=2)"]
# exec: the shell hands its place to voicebot, which becomes gunicorn's master,
# so `docker stop`'s SIGTERM reaches gunicorn and live turns finish first.
CMD ["sh", "-c", "exec voicebot serve --bind 0.0.0.0:$PORT"]
