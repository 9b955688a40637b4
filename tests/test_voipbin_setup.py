"""``voicebot voipbin setup``: one command connects an account, loses nothing, and changes nothing twice."""

from __future__ import annotations

import pytest

from voicebot.cli import main
from voicebot_testing.fake_voipbin import NIL_UUID, FakeVoipbin

NUMBER = "+15559870000"
URL = "https://bot.example.com"


@pytest.fixture
def account(monkeypatch):
    with FakeVoipbin() as fake:
        fake.add_number(NUMBER)
        fake.add_number("+15550001111")  # another number of the account, left alone
        monkeypatch.setenv("VOIPBIN_ACCESS_KEY", fake.access_key)
        monkeypatch.setenv("VOIPBIN_API_URL", fake.api_url)
        monkeypatch.delenv("VOIPBIN_FETCH_TOKEN", raising=False)
        yield fake


def setup(capsys, *args):
    status = main(["voipbin", "setup", "--public-url", URL, "--number", NUMBER, *args])
    return status, capsys.readouterr()


def printed_settings(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("VOIPBIN_"))


def test_setup_connects_the_account_and_keeps_its_details(account, capsys):
    before = dict(account.customer)
    status, printed = setup(capsys)
    assert status == 0, printed.err

    for field in ("name", "detail", "email", "phone_number", "address"):
        assert account.customer[field] == before[field]
    assert account.customer["webhook_method"] == "POST"
    assert account.customer["webhook_uri"] == f"{URL}/webhook/voipbin"

    settings = printed_settings(printed.out)
    assert settings["VOIPBIN_WEBHOOK_SECRET"] == account.webhook_secret
    assert settings["VOIPBIN_NUMBERS"] == NUMBER
    token = settings["VOIPBIN_FETCH_TOKEN"]
    assert len(token) >= 24

    (flow,) = account.flows.values()
    assert [(a["type"], a["option"]) for a in flow["actions"]] == [
        ("fetch", {"event_url": f"{URL}/webhook/voipbin/fetch?token={token}", "event_method": "POST"})]
    ours, other = sorted(account.numbers.values(), key=lambda n: n["number"] != NUMBER)
    assert ours["call_flow_id"] == flow["id"] and ours["message_flow_id"] == NIL_UUID
    assert other["call_flow_id"] == NIL_UUID


def test_running_it_again_changes_nothing(account, capsys):
    first_status, first = setup(capsys)
    writes = list(account.writes)
    status, second = setup(capsys)
    assert first_status == status == 0
    assert account.writes == writes
    assert "nothing to change" in second.out
    assert printed_settings(second.out) == printed_settings(first.out)  # the same fetch token


def test_a_dry_run_writes_nothing(account, capsys):
    before = dict(account.customer)
    status, printed = setup(capsys, "--dry-run")
    assert status == 0
    assert account.writes == [] and account.customer == before and account.flows == {}
    assert "would set the account's webhook" in printed.out and "would create the flow" in printed.out
    assert "nothing written" in printed.out


def test_a_moved_deployment_updates_the_flow_and_webhook(account, capsys):
    setup(capsys)
    status = main(["voipbin", "setup", "--public-url", "https://new.example.com", "--number", NUMBER])
    capsys.readouterr()
    assert status == 0
    (flow,) = account.flows.values()
    assert flow["actions"][0]["option"]["event_url"].startswith("https://new.example.com/webhook/voipbin/fetch?")
    assert account.customer["webhook_uri"] == "https://new.example.com/webhook/voipbin"


def test_an_unknown_number_stops_before_anything_is_written(account, capsys):
    status = main(["voipbin", "setup", "--public-url", URL, "--number", "+19999999999"])
    printed = capsys.readouterr()
    assert status == 1 and "+19999999999" in printed.err
    assert account.writes == []


def test_a_customer_without_all_its_fields_is_not_written(account, capsys):
    del account.customer["address"]
    status, printed = setup(capsys)
    assert status == 1 and "address" in printed.err and "lose nothing" in printed.err
    assert "PUT /customer" not in account.writes


def test_setup_needs_the_access_key(account, capsys, monkeypatch):
    monkeypatch.delenv("VOIPBIN_ACCESS_KEY")
    status, printed = setup(capsys)
    assert status == 2 and "VOIPBIN_ACCESS_KEY" in printed.err
