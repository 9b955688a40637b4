"""Campaigns through the service: the CLI, the runner in every worker, the fake VoIPBin placing calls over HTTP."""

from __future__ import annotations

import csv
import json
import os
import signal
import io
from collections import Counter

import pytest
import requests

from voicebot.cli import main as cli_main
from voicebot_testing.fake_twilio import FakeTwilio
from voicebot import background
from voicebot.runtime import runtime_of

from .support import Gunicorn, ServedApp, free_port, metric, wait_for
from .test_outbound import AUTH, TOKEN, outbound_settings

PERSON, BUSY, NOBODY, MACHINE = "+15551112222", "+15551110001", "+15551110002", "+15551110003"


def contacts_file(path, rows) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name", "slot"])
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def serve_campaigns(make_voipbin_app, voipbin, monkeypatch):
    """voicebot on a real HTTP server, its background workers running, the fake VoIPBin calling it."""
    started = []

    def serve(**more):
        port = free_port()
        app = make_voipbin_app(**outbound_settings(PUBLIC_URL=f"http://127.0.0.1:{port}", **more))
        served = ServedApp(app, port)
        background.start(app)
        started.append((app, served))
        voipbin.webhook_url = served.url + "/webhook/voipbin"
        voipbin.ring_seconds, voipbin.talk_seconds = 0.05, 0.4
        monkeypatch.setenv("OUTBOUND_TOKEN", TOKEN)
        return app, served

    yield serve
    for app, served in started:
        background.stop(app)
        served.stop()


def status_of(url: str, campaign_id: str) -> dict:
    return requests.get(f"{url}/campaigns/{campaign_id}", headers=AUTH, timeout=10).json()


def test_a_campaign_dials_every_contact_by_its_rules_and_its_results_are_complete(serve_campaigns, voipbin, tmp_path,
                                                                                  capsys):
    app, served = serve_campaigns()
    rows = [(PERSON, "Ana", "Tue"), (BUSY, "Ben", "Wed"), (NOBODY, "Cy", "Thu"), (MACHINE, "Di", "Fri"),
            ("+15551113333", "Ed", "Sat")]
    path = contacts_file(tmp_path / "contacts.csv", rows)
    assert cli_main(["campaign", "start", path, "--concurrency", "2", "--attempts", "2", "--retry-gap", "0",
                     "--pace", "10", "--url", served.url]) == 0
    campaign_id = capsys.readouterr().out.strip()
    assert campaign_id.startswith("cmp_")
    wait_for(lambda: status_of(served.url, campaign_id)["state"] == "done", timeout=60, what="the campaign's end")
    dialled = Counter(p["destinations"][0]["target"] for p in voipbin.placed)
    assert dialled == {PERSON: 1, BUSY: 2, NOBODY: 2, MACHINE: 1, "+15551113333": 1}
    assert voipbin.live_peak <= 2
    greeted = {voipbin.calls[c]["destination"]["target"]: said[0] for c, said in voipbin.said.items()}
    assert greeted[PERSON] == "Hello Ana, this is Example Dental about your appointment on Tue."
    assert greeted["+15551113333"].startswith("Hello Ed,")
    out = tmp_path / "results.csv"
    assert cli_main(["campaign", "results", campaign_id, "--output", str(out), "--url", served.url]) == 0
    results = {r["phone"]: r for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert {p: r["outcome"] for p, r in results.items()} == {
        PERSON: "human", BUSY: "busy", NOBODY: "no_answer", MACHINE: "voicemail", "+15551113333": "human"}
    assert results[BUSY]["attempts"] == "2" and results[PERSON]["record_id"].startswith("rec_")
    assert results[PERSON]["var.name"] == "Ana" and results[PERSON]["final"] == "true"
    records = {r["call_id"]: r for r in runtime_of(app).records.export(0)}
    assert all(r["campaign_id"] == campaign_id for r in records.values()) and len(records) == 7
    assert cli_main(["campaign", "status", campaign_id, "--url", served.url]) == 0
    assert "5/5 done" in capsys.readouterr().out
    scraped = requests.get(served.url + "/metrics", timeout=10).text
    assert "voicebot_outbound_live_calls 0.0" in scraped
    assert metric(scraped, "voicebot_outbound_calls_total", '{outcome="voicemail"}') >= 1


def test_pause_resume_and_cancel_through_the_command(serve_campaigns, voipbin, tmp_path, capsys):
    app, served = serve_campaigns()
    path = contacts_file(tmp_path / "contacts.csv", [(f"+155511140{i:02d}", f"n{i}", "Mon") for i in range(6)])
    assert cli_main(["campaign", "start", path, "--concurrency", "1", "--pace", "10", "--url", served.url]) == 0
    campaign_id = capsys.readouterr().out.strip()
    assert cli_main(["campaign", "pause", campaign_id, "--url", served.url]) == 0
    paused_at = len(voipbin.placed)
    assert "(paused)" in capsys.readouterr().out
    wait_for(lambda: status_of(served.url, campaign_id)["live"] == 0, timeout=20, what="the live call's end")
    assert len(voipbin.placed) == paused_at <= 1  # nothing more dialled while paused
    assert cli_main(["campaign", "resume", campaign_id, "--url", served.url]) == 0
    wait_for(lambda: len(voipbin.placed) >= paused_at + 1, timeout=20, what="a dial after resuming")
    assert cli_main(["campaign", "cancel", campaign_id, "--url", served.url]) == 0
    wait_for(lambda: status_of(served.url, campaign_id)["state"] == "done", timeout=20, what="the end")
    capsys.readouterr()
    assert cli_main(["campaign", "status", campaign_id, "--json", "--url", served.url]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["outcomes"]["not_dialled"] == 6 - len(voipbin.placed)


@pytest.mark.parametrize("body, words", [
    ({"contacts": []}, "'contacts' must hold at least 1"),
    ({"contacts": [{"phone": "555"}]}, "'contacts[0].phone' must be a number in E.164 form"),
    ({"contacts": [{"phone": PERSON, "variables": {"name": "A", "slot": "B"}},
                   {"phone": PERSON, "variables": {"name": "A", "slot": "B"}}]}, "is contact 1 too"),
    ({"contacts": [{"phone": PERSON, "variables": {"name": "Ana"}}]}, f"contact 1 ({PERSON}) has no value for slot"),
    ({"contacts": [{"phone": PERSON, "variables": {"name": "A", "slot": "B"}}], "window": "9-5"}, "HH:MM-HH:MM"),
    ({"contacts": [{"phone": PERSON, "variables": {"name": "A", "slot": "B"}}], "timezone": "Nowhere/City"},
     "IANA time zone"),
    ({"contacts": [{"phone": PERSON, "variables": {"name": "A", "slot": "B"}}], "concurrency": "lots"},
     "'concurrency' must be a whole number"),
])
def test_a_campaign_that_could_only_fail_later_is_refused_at_start(make_voipbin_app, voipbin, body, words):
    app = make_voipbin_app(**outbound_settings())
    answer = app.test_client().post("/campaigns", json=body, headers=AUTH)
    assert answer.status_code == 400 and words in answer.get_json()["message"], answer.get_json()
    assert voipbin.placed == []


def test_an_unknown_campaign_is_a_404_and_anonymous_callers_see_none(make_voipbin_app, voipbin):
    client = make_voipbin_app(**outbound_settings()).test_client()
    assert client.get("/campaigns/cmp_nope", headers=AUTH).status_code == 404
    assert client.get("/campaigns/cmp_nope").status_code == 401
    assert client.post("/campaigns/cmp_nope/pause", headers=AUTH).status_code == 404


def test_two_instances_keep_one_cap_and_a_killed_one_loses_no_contact(tmp_path, fake_llm, redis_url, redis_prefix,
                                                                      voipbin):
    """Both instances dial one campaign; one is SIGKILLed mid-campaign; the other carries it to its end."""
    env = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix, "ANTHROPIC_API_KEY": fake_llm.api_key,
           "ANTHROPIC_BASE_URL": fake_llm.url, "WEB_CONCURRENCY": "2", "WEB_THREADS": "16",
           "VOIPBIN_WEBHOOK_SECRET": voipbin.webhook_secret, "VOIPBIN_ACCESS_KEY": voipbin.access_key,
           "VOIPBIN_API_URL": voipbin.api_url, "VOIPBIN_FETCH_TOKEN": "ft", "VOIPBIN_TIMEOUT_SECONDS": "2",
           **{k: str(v) for k, v in outbound_settings().items()}}
    survivor = Gunicorn(env)
    doomed = Gunicorn({**env, "PUBLIC_URL": survivor.url})
    survivor.env["PUBLIC_URL"] = survivor.url
    survivor.start(tmp_path / "survivor.log")
    doomed.start(tmp_path / "doomed.log")
    try:
        voipbin.webhook_url = survivor.url + "/webhook/voipbin"
        voipbin.ring_seconds, voipbin.talk_seconds = 0.05, 1.0
        people = [f"+155511{i:02d}5555" for i in range(24)]  # none ends in 0001-0003: all are people
        busy = [f"+1555116{i}0001" for i in range(4)]  # busy twice each: two attempts
        contacts = [{"phone": p, "variables": {"name": f"n{i}", "slot": "Mon"}} for i, p in enumerate(people + busy)]
        started = requests.post(doomed.url + "/campaigns", headers=AUTH, timeout=30, json={
            "contacts": contacts, "concurrency": 4, "attempts": 2, "retry_gap": 0, "pace": 4})
        assert started.status_code == 201, started.text
        campaign_id = started.json()["campaign_id"]
        wait_for(lambda: len(voipbin.placed) >= 8, timeout=30, what="a third of the campaign")
        for pid in [*doomed.workers(), doomed.process.pid]:
            os.kill(pid, signal.SIGKILL)
        killed_at = len(voipbin.placed)
        # A dial lost with the killed instance is swept as a failed attempt after DIAL_STALE (60 s).
        wait_for(lambda: status_of(survivor.url, campaign_id)["state"] == "done", timeout=150,
                 what="the campaign's end, carried by the survivor")
        results = requests.get(f"{survivor.url}/campaigns/{campaign_id}/results", headers=AUTH,
                               timeout=10).json()["results"]
    finally:
        doomed.stop()
        survivor.stop()
    dialled = Counter(p["destinations"][0]["target"] for p in voipbin.placed)
    assert voipbin.live_peak <= 4
    attempts = {r["phone"]: r["attempts"] for r in results}
    # Never twice for one attempt. A dial the killed instance had under way, and could not record, counts as
    # a failed attempt after DIAL_STALE: the next attempt may call that person again.
    assert all(dialled[p] <= attempts[p] for p in people + busy), (dialled, attempts)
    lost = [p for p in people + busy if dialled[p] < attempts[p]] + [p for p in people if attempts[p] > 1]
    assert len(lost) <= 2, lost  # at most the dials the killed instance had under way
    outcomes = Counter(r["outcome"] for r in results)
    assert len(results) == 28 and all(r["final"] for r in results)
    assert outcomes["human"] >= 23 and outcomes["busy"] >= 3
    print(f"\nDRILL campaign-instance-killed: 28 contacts at concurrency 4 over two instances; one SIGKILLed after "
          f"{killed_at} dials; {len(voipbin.placed)} dials in all, at most {voipbin.live_peak} calls up at once, "
          f"{len(lost)} contact(s) whose dial was lost with the killed instance; outcomes {dict(outcomes)}")


def started(url: str, people: list[str], **rules) -> str:
    """POST /campaigns for ``people`` (each with the variables the greeting needs); the campaign's id."""
    answer = requests.post(url + "/campaigns", headers=AUTH, timeout=60, json={
        "contacts": [{"phone": p, "variables": {"name": "Al", "slot": "Mon"}} for p in people], **rules})
    assert answer.status_code == 201, answer.text
    return answer.json()["campaign_id"]


def test_under_429s_every_contact_is_still_dialled_once(serve_campaigns, voipbin):
    """VoIPBin's rate limit (here 4 requests a second, burst 4) answers 429s; the dials wait, none repeats."""
    app, served = serve_campaigns()
    voipbin.limit_rate(4.0, 4)
    people = [f"+155511{i:02d}7777" for i in range(6)]
    campaign_id = started(served.url, people, concurrency=3, pace=10)
    wait_for(lambda: status_of(served.url, campaign_id)["state"] == "done", timeout=90, what="the campaign's end")
    dialled = Counter(p["destinations"][0]["target"] for p in voipbin.placed)
    assert dialled == {p: 1 for p in people}
    assert voipbin.rate_limited > 0  # the limit was met, and waited out


@pytest.mark.parametrize("store_kind", ["redis"])  # the shape many workers share; the steps are the same on memory
@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_no_dial_reaches_the_platform_after_a_cancel_or_a_pause_answers(serve_campaigns, voipbin, action):
    """Dials that take VoIPBin 0.3 s each, many due at once: what was under way when the answer came is all."""
    app, served = serve_campaigns()
    voipbin.latency = 0.3
    people = [f"+155512{i:02d}8888" for i in range(30)]
    campaign_id = started(served.url, people, concurrency=10, pace=20)
    wait_for(lambda: len(voipbin.placed) >= 2, timeout=30, what="the first dials")
    stopped = requests.post(f"{served.url}/campaigns/{campaign_id}/{action}", headers=AUTH, timeout=30)
    placed_by_then = len(voipbin.placed)
    assert stopped.status_code == 200 and stopped.json()["state"] in ("cancelled", "paused", "done")
    wait_for(lambda: status_of(served.url, campaign_id)["live"] == 0, timeout=30, what="the live calls' end")
    assert len(voipbin.placed) == placed_by_then < len(people)
    if action == "cancel":
        status = status_of(served.url, campaign_id)
        assert status["state"] == "done" and status["outcomes"]["not_dialled"] == len(people) - placed_by_then


@pytest.mark.parametrize("store_kind", ["redis"])  # where its size costs: a hash and a sorted set in Redis
def test_a_campaign_of_the_most_contacts_the_api_takes_runs_and_cancels(serve_campaigns, voipbin):
    """20,000 contacts in one POST: started, dialled at its pace, cancelled, and every contact has its row."""
    from voicebot.outbound.api import MAX_CONTACTS

    app, served = serve_campaigns()
    people = [f"+1555{i:07d}" for i in range(MAX_CONTACTS)]
    campaign_id = started(served.url, people, concurrency=8, pace=20)
    wait_for(lambda: len(voipbin.placed) >= 10, timeout=30, what="the first dials")
    assert requests.post(f"{served.url}/campaigns/{campaign_id}/cancel", headers=AUTH, timeout=30).ok
    dialled = len(voipbin.placed)
    wait_for(lambda: status_of(served.url, campaign_id)["state"] == "done", timeout=60, what="the campaign's end")
    status = status_of(served.url, campaign_id)
    assert status["done"] == status["contacts"] == MAX_CONTACTS and status["live"] == 0
    assert sum(status["outcomes"].values()) == MAX_CONTACTS
    assert status["outcomes"]["not_dialled"] == MAX_CONTACTS - dialled
    rows = requests.get(f"{served.url}/campaigns/{campaign_id}/results", headers=AUTH, timeout=60).json()["results"]
    assert len(rows) == MAX_CONTACTS and all(r["final"] for r in rows)
    assert [r["phone"] for r in rows] == people
    assert sum(1 for r in rows if r["attempts"]) == dialled == len(voipbin.placed)


@pytest.mark.parametrize("mode", ["gather", "relay"])
def test_a_campaign_on_twilio_the_fake_playing_each_call_as_twilio_does(make_app, tmp_path, mode):
    """The fake Twilio places each call, requests its Url signed with AnsweredBy, talks (in the Gather loop, or
    over ConversationRelay's socket), and posts its status."""
    twilio = FakeTwilio().start()
    port = free_port()
    app = make_app(**outbound_settings(PUBLIC_URL=f"http://127.0.0.1:{port}", TWILIO_AUTH_TOKEN=twilio.auth_token,
                                       TWILIO_MODE=mode,
                                       TWILIO_ACCOUNT_SID=twilio.account_sid, TWILIO_API_URL=twilio.api_url,
                                       VOICEMAIL_MESSAGE="Hi {{name}}, please call us back about {{slot}}."))
    twilio.calls_itself = True
    served = ServedApp(app, port)
    background.start(app)
    try:
        people = ["+15551114444", "+15551115555"]
        answer = requests.post(served.url + "/campaigns", headers=AUTH, timeout=30, json={
            "contacts": [{"phone": p, "variables": {"name": f"N{p[-1]}", "slot": "Mon"}}
                         for p in [*people, BUSY, NOBODY, MACHINE]], "concurrency": 2, "pace": 10})
        assert answer.status_code == 201, answer.text
        campaign_id = answer.json()["campaign_id"]
        wait_for(lambda: status_of(served.url, campaign_id)["state"] == "done", timeout=60, what="the end")
        answered = requests.get(f"{served.url}/campaigns/{campaign_id}/results", headers=AUTH, timeout=10)
        results = {r["phone"]: r for r in answered.json()["results"]}
    finally:
        background.stop(app)
        served.stop()
        twilio.stop()
    assert {p: r["outcome"] for p, r in results.items()} == {
        people[0]: "human", people[1]: "human", BUSY: "busy", NOBODY: "no_answer", MACHINE: "voicemail"}
    assert twilio.live_peak <= 2
    by_number = {twilio.call(sid)["To"]: said for sid, said in twilio.heard.items()}
    assert by_number[people[0]][0] == "Hello N4, this is Example Dental about your appointment on Mon."
    assert by_number[people[0]][1] and not by_number[people[0]][1].startswith("[relay failed")  # it talked
    assert by_number[MACHINE] == ["Hi N3, please call us back about Mon."]
