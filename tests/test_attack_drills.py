"""The attack on the operator tools, records, Twilio and the local trial, replayed against the Procfile's server.

Each test reproduces one finding of that attack with real processes (the
Procfile's gunicorn, hostile HTTP servers on loopback, Redis, a browser) and
checks that it now does no harm. Drills print one ``DRILL`` line.
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from twilio.request_validator import RequestValidator

from voicebot_testing.fake_llm import MARKER
from voicebot_testing.loopback import JSONHandler, LoopbackServer

from .support import (Gunicorn, HostileServer, RecordReceiver, ToolServer, metric, needs_browser, procfile_command,
                      tools_file, wait_for)

TOOL_SECRET = "attack-tool-secret"
RECORD_SECRET = "attack-record-secret"


@pytest.fixture
def procfile(tmp_path, fake_llm):
    """The Procfile's command on the defaults (memory store, one worker), with the fake model and ``env``."""
    started: list[Gunicorn] = []

    def start(**env: str) -> Gunicorn:
        settings = {"REDIS_URL": "", "ANTHROPIC_API_KEY": fake_llm.api_key, "ANTHROPIC_BASE_URL": fake_llm.url,
                    "LLM_TIMEOUT_SECONDS": "4", **env}
        server = Gunicorn(settings, command=procfile_command()).start(tmp_path / f"procfile-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def hostile():
    servers: list[HostileServer] = []

    def make(mode: str, **options) -> HostileServer:
        servers.append(HostileServer(mode, **options))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def turn(server: Gunicorn, call_id: str, text: str, **headers: str) -> requests.Response:
    return requests.post(server.url + "/webhook/transcript", json={"call_id": call_id, "transcript": text},
                         headers=headers, timeout=30)


def spoken(server: Gunicorn, call_id: str, text: str) -> str:
    answer = turn(server, call_id, text)
    assert answer.status_code == 200, answer.text  # never a 5xx to the platform
    return answer.json()["response"]


# 1. Redirects followed to internal hosts.

@pytest.mark.parametrize("mode", ["redirect307", "redirect302"])
def test_a_tool_redirecting_to_an_internal_host_is_not_followed(procfile, hostile, tmp_path, mode):
    internal = hostile("ok")  # stands in for http://127.0.0.1:.../internal, or a metadata service
    tool = hostile(mode, redirect_to=internal.url + "?AccessKeyId")
    server = procfile(TOOLS_FILE=tools_file(tmp_path / "tools.json", ("lookup", tool.url, 2.0)),
                      TOOLS_SECRET=TOOL_SECRET, TOOLS_ALLOW_LOOPBACK="1")
    reply = spoken(server, "redirected", "tool:lookup mk1")
    assert "redirect" in reply and "AccessKeyId" not in reply and "ok" not in reply.lower().split("tool")[-1]
    assert len(tool.arrived()) == 1 and internal.arrived() == []  # the signed body went nowhere else
    assert MARKER.findall(spoken(server, "redirected", "mk2")) == ["mk1", "mk2"]  # the call goes on


def test_a_tool_host_that_resolves_to_loopback_is_refused_at_connect(procfile, hostile, tmp_path):
    # "127.1" is no IP address to the URL check, but the resolver makes it 127.0.0.1: the check that
    # counts is on the address connected to (as for a name rebound to an internal address).
    internal = hostile("ok")
    port = internal.url.split(":")[2].split("/")[0]
    server = procfile(TOOLS_FILE=tools_file(tmp_path / "tools.json", ("lookup", f"https://127.1:{port}/x", 2.0)),
                      TOOLS_SECRET=TOOL_SECRET)
    reply = spoken(server, "rebound", "tool:lookup mk1")
    assert "could not be reached" in reply
    assert internal.arrived() == []
    assert "127.1 resolves only to addresses not allowed: 127.0.0.1 is a loopback address" in server.log()


@pytest.mark.parametrize("mode", ["redirect307", "redirect302"])
def test_a_record_receiver_redirecting_gets_nothing_sent_on_and_the_record_is_retried(procfile, hostile, mode):
    elsewhere = hostile("ok")
    receiver = hostile(mode, redirect_to=elsewhere.url)
    server = procfile(CALL_REPORT_URL=receiver.url, CALL_REPORT_SECRET=RECORD_SECRET)
    spoken(server, "r1", "mk1")
    requests.post(server.url + "/webhook/transcript", json={"type": "call.ended", "call_id": "r1"}, timeout=10)
    wait_for(lambda: len(receiver.arrived()) >= 2, timeout=15, what="the record sent again after a redirect")
    assert elsewhere.arrived() == []
    page = requests.get(server.url + "/metrics", timeout=5).text
    assert metric(page, "voicebot_call_records_total", '{event="delivered"}') == 0
    assert metric(page, "voicebot_call_records_total", '{event="retried"}') >= 1


# 2. Tool failures that crashed the turn.

@pytest.mark.parametrize("mode, words", [("stall", "did not answer in time"), ("utf16", "not JSON"),
                                         ("bad_gzip", "broken or cut-off"), ("cut_chunked", "broken or cut-off")])
def test_every_way_a_tool_fails_is_an_error_result_within_the_turn(procfile, hostile, tmp_path, mode, words):
    tool = hostile(mode)
    receiver = RecordReceiver(RECORD_SECRET)
    try:
        server = procfile(TOOLS_FILE=tools_file(tmp_path / "tools.json", ("lookup", tool.url, 1.5)),
                          TOOLS_SECRET=TOOL_SECRET, TOOLS_ALLOW_LOOPBACK="1", CALL_REPORT_URL=receiver.url,
                          CALL_REPORT_SECRET=RECORD_SECRET)
        started = time.monotonic()
        reply = spoken(server, "broken", "tool:lookup mk1")
        took = time.monotonic() - started
        assert "The tool failed" in reply and words in reply, reply
        assert "AKIA" not in reply
        assert took < 1.5 + 4 + 1  # the tool's deadline, then the model's answer about it
        # The caller's words stayed in the history: nothing was lost.
        assert MARKER.findall(spoken(server, "broken", "mk2")) == ["mk1", "mk2"]
        requests.post(server.url + "/webhook/transcript", json={"type": "call.ended", "call_id": "broken"},
                      timeout=10)
        wait_for(lambda: receiver.received, timeout=10, what="the call's record")
        (line,) = [line for line in receiver.received[0]["transcript"] if line["speaker"] == "tool"]
        assert line["is_error"] is True
    finally:
        receiver.stop()


# 3. A slow tool that exhausted the pool, and calls sent minutes late.

def test_a_trickling_tool_flood_starves_no_other_tool_and_nothing_is_sent_late(procfile, hostile, tmp_path):
    import json

    slow = hostile("trickle", gap=0.5)
    fast = ToolServer(TOOL_SECRET)
    try:
        server = procfile(TOOLS_FILE=tools_file(tmp_path / "tools.json", ("slow_lookup", slow.url, 2.0),
                                                ("lookup_order", fast.url, 2.0)),
                          TOOLS_SECRET=TOOL_SECRET, TOOLS_ALLOW_LOOPBACK="1", TOOLS_MAX_IN_FLIGHT="8")
        sent: dict[str, float] = {}

        def flood(n: int) -> str:
            sent[f"flood-{n}"] = time.monotonic()
            return spoken(server, f"flood-{n}", f"tool:slow_lookup mk{n}")

        with ThreadPoolExecutor(60) as pool:
            flooding = [pool.submit(flood, n) for n in range(120)]
            wait_for(lambda: len(slow.arrived()) >= 8, timeout=15, what="the slow tool's slots filled")
            # Meanwhile another tool still answers, at once.
            started = time.monotonic()
            reply = spoken(server, "fast-one", "where is order 7 tool:lookup_order mk7")
            fast_took = time.monotonic() - started
            replies = [f.result() for f in flooding]
        assert "The tool said" in reply and fast.calls, reply
        assert all("The tool failed" in r for r in replies)
        busy = sum("busy with other calls" in r for r in replies)
        # How long after its turn came each request reached the tool: never after the tool's 2 s.
        delays = [at - sent[json.loads(body)["call_id"]] for at, _, body in slow.arrived()]
        print(f"\nDRILL tool-flood: 120 turns on a tool trickling a byte every 0.5 s: {len(delays)} reached it "
              f"(the latest {max(delays) * 1000:.0f} ms after its turn came), {busy} were told at once it was "
              f"busy; another tool answered in {fast_took * 1000:.0f} ms meanwhile")
        assert len(delays) + busy == 120 and busy > 0
        assert max(delays) < 2.0
        assert fast_took < 3.0
        # SIGTERM with tool calls in flight: they end at their deadline, and so does the worker.
        with ThreadPoolExecutor(8) as pool:
            before = len(slow.arrived())
            more = [pool.submit(flood, 200 + n) for n in range(8)]
            wait_for(lambda: len(slow.arrived()) >= before + 8, timeout=15, what="tool calls in flight")
            stopping = time.monotonic()
            server.stop()
            stopped = time.monotonic() - stopping
            for f in more:
                f.exception()
        assert stopped < 10.0, stopped  # the graceful timeout is 16 s: nothing waited it out
        assert "WORKER TIMEOUT" not in server.log()
    finally:
        fast.stop()


# 4. Cross-site turns in the local trial (no WEBHOOK_TOKEN).

@needs_browser
def test_a_page_of_another_site_cannot_make_a_turn_in_a_local_trial(procfile, browser):
    server = procfile()
    target = server.url + "/webhook/transcript"
    # What any web page can send without the browser asking first: a text/plain form, a no-cors fetch.
    page = f"""<!doctype html><form id=f method=POST enctype="text/plain" action="{target}">
<input name='{{"call_id":"xsite-form","transcript":"mk1","x":"' value='"}}'></form>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors",
                     body: new Blob(['{{"call_id":"xsite-fetch","transcript":"mk1"}}'])}})
  .finally(() => document.getElementById("f").submit());
</script>""".encode()

    class Attacker(JSONHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    before = requests.get(server.url + "/metrics", timeout=5).text

    def refused(page: str) -> float:
        return metric(page, "voicebot_errors_total", '{kind="unsupported_media_type"}')

    with LoopbackServer(("127.0.0.1", 0), Attacker) as attacker:
        browser.get(attacker.base_url + "/")
        wait_for(lambda: refused(requests.get(server.url + "/metrics", timeout=5).text) - refused(before) >= 2,
                 timeout=20, what="both cross-site requests refused")
    after = requests.get(server.url + "/metrics", timeout=5).text
    assert metric(after, "voicebot_turns_total", '{outcome="reply"}') == metric(before, "voicebot_turns_total",
                                                                                '{outcome="reply"}')


@pytest.mark.parametrize("headers, status", [
    ({"Host": "attacker.example"}, 403),               # a name rebound to 127.0.0.1
    ({"Origin": "http://attacker.example"}, 403),      # a page of another site
    ({"Origin": "null"}, 403),                         # a sandboxed frame
    ({"Content-Type": "text/plain"}, 415),
])
def test_rebinding_and_foreign_origins_are_refused_in_a_local_trial(procfile, headers, status):
    server = procfile()
    answer = requests.post(server.url + "/webhook/transcript", data=b'{"call_id": "c", "transcript": "mk1"}',
                           headers={"Content-Type": "application/json", **headers}, timeout=10)
    assert answer.status_code == status and answer.headers["Content-Type"] == "application/json"
    assert requests.get(server.url + "/talk", headers={"Host": "attacker.example"}, timeout=10).status_code == 403
    # This machine's own names still work, the page's own origin too.
    own = {"Origin": server.url, "Host": f"localhost:{server.port}"}
    assert MARKER.findall(spoken_with(server, "c", "mk2", own)) == ["mk2"]


def spoken_with(server: Gunicorn, call_id: str, text: str, headers: dict[str, str]) -> str:
    answer = turn(server, call_id, text, **headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["response"]


# 5. Per-call memory without a bound.

@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_long_call_keeps_a_bounded_transcript(procfile, store, request):
    env = {"MAX_TRANSCRIPT_LINES": "40"}
    if store == "redis":
        env.update(REDIS_URL=request.getfixturevalue("redis_url"),
                   REDIS_PREFIX=request.getfixturevalue("redis_prefix"), WEB_CONCURRENCY="1")
    receiver = RecordReceiver(RECORD_SECRET)
    try:
        server = procfile(CALL_REPORT_URL=receiver.url, CALL_REPORT_SECRET=RECORD_SECRET, **env)
        with requests.Session() as session:
            for n in range(60):
                answer = session.post(server.url + "/webhook/transcript", timeout=30,
                                      json={"call_id": "long", "transcript": f"mk{n} " + "x" * 1990})
                assert answer.status_code == 200
            if store == "redis":
                import redis

                client = redis.Redis.from_url(env["REDIS_URL"])
                assert client.llen(f"{env['REDIS_PREFIX']}:call:{{article:long}}:lines") == 40
                client.close()
            session.post(server.url + "/webhook/transcript", json={"type": "call.ended", "call_id": "long"},
                         timeout=10)
        wait_for(lambda: receiver.received, timeout=10, what="the long call's record")
        record = receiver.received[0]
        assert len(record["transcript"]) == 40 and record["transcript_dropped"] == 120 - 40
        assert record["transcript"][-1]["speaker"] == "bot" and record["turns"] == 60
    finally:
        receiver.stop()


# 6. Undelivered records piling up in memory; 7. one slow receiver stalling every delivery.

def short_calls(server: Gunicorn, prefix: str, count: int) -> None:
    """``count`` calls of one turn each, ended: as many records."""
    with requests.Session() as session:
        for n in range(count):
            for body in ({"call_id": f"{prefix}{n}", "transcript": "mk1"},
                         {"type": "call.ended", "call_id": f"{prefix}{n}"}):
                assert session.post(server.url + "/webhook/transcript", json=body, timeout=10).status_code == 200


def test_records_waiting_in_memory_are_bounded_and_the_overflow_is_counted(procfile):
    receiver = RecordReceiver(RECORD_SECRET)
    receiver.down = True
    try:
        server = procfile(CALL_REPORT_URL=receiver.url, CALL_REPORT_SECRET=RECORD_SECRET, MAX_QUEUED_RECORDS="20")
        short_calls(server, "q", 60)
        page = requests.get(server.url + "/metrics", timeout=5).text
        assert metric(page, "voicebot_call_records_total", '{event="dropped"}') == 40
        assert "(MAX_QUEUED_RECORDS)" in server.log()
        receiver.down = False
        wait_for(lambda: len(receiver.by_id()) == 20, timeout=90, what="the 20 records kept, delivered")
        kept = {r["call_id"] for r in receiver.received}
        assert len(kept) == 20 and "q59" in kept and "q0" not in kept  # the oldest were given up on
    finally:
        receiver.stop()


def test_a_receiver_that_answers_and_then_trickles_holds_nothing_up(procfile, hostile):
    receiver = hostile("ok_then_trickle", gap=2.0)
    server = procfile(CALL_REPORT_URL=receiver.url, CALL_REPORT_SECRET=RECORD_SECRET)
    short_calls(server, "t", 10)
    started = time.monotonic()

    def delivered() -> float:
        page = requests.get(server.url + "/metrics", timeout=5).text
        return metric(page, "voicebot_call_records_total", '{event="delivered"}')

    wait_for(lambda: delivered() == 10, timeout=20, what="ten records delivered")
    took = time.monotonic() - started
    print(f"\nDRILL trickling-receiver: 10 records to a receiver that says 200 and then sends its body a byte "
          f"every 2 s: all delivered in {took:.1f} s, each once")
    assert len(receiver.arrived()) == 10  # delivered once each: the status counted, no retry
    assert took < 5.0


# 9. A replayed Twilio request reopening an ended call; 10. a full store answering new calls.

TWILIO_TOKEN = "attack-twilio-token"


def twilio(server: Gunicorn, path: str, fields: dict) -> ET.Element:
    url = server.url + path
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, fields)
    answer = requests.post(url, data=fields, headers={"X-Twilio-Signature": signature}, timeout=15)
    assert answer.status_code == 200, answer.text
    return ET.fromstring(answer.content)


def call_fields(sid: str, **more: str) -> dict:
    return {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+15551230000", "To": "+15559870000",
            "CallStatus": "in-progress", "Direction": "inbound", **more}


def test_a_replayed_twilio_request_never_reopens_an_ended_call(procfile, redis_url, redis_prefix):
    import redis

    receiver = RecordReceiver(RECORD_SECRET)
    try:
        server = procfile(REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix, WEB_CONCURRENCY="1",
                          TWILIO_AUTH_TOKEN=TWILIO_TOKEN, CALL_REPORT_URL=receiver.url,
                          CALL_REPORT_SECRET=RECORD_SECRET)
        sid = "CA" + uuid.uuid4().hex
        voice = call_fields(sid)
        turn_one = call_fields(sid, SpeechResult="mk1")
        assert twilio(server, "/webhook/twilio/voice", voice).find("Gather") is not None
        twilio(server, "/webhook/twilio/turn?n=1", turn_one)
        twilio(server, "/webhook/twilio/status", call_fields(sid, CallStatus="completed", CallDuration="9"))
        wait_for(lambda: receiver.received, timeout=10, what="the call's record")
        # The tombstone outlives any request Twilio could still send: a day and an hour.
        client = redis.Redis.from_url(redis_url)
        (tombstone,) = client.keys(f"{redis_prefix}:alias:ended:twilio:{sid}")
        assert client.pttl(tombstone) > 24 * 3600 * 1000
        client.close()
        # A captured request sent again: answered, never reopened, no second record.
        for path, fields in (("/webhook/twilio/voice", voice), ("/webhook/twilio/turn?n=1", turn_one),
                             ("/webhook/twilio/turn?n=2", call_fields(sid, SpeechResult="mk2"))):
            root = twilio(server, path, fields)
            assert root.find("Hangup") is not None and root.find("Gather") is None
        page = requests.get(server.url + "/metrics", timeout=5).text
        assert metric(page, "voicebot_calls_total", '{event="started"}') == 1
        assert len(receiver.received) == 1
    finally:
        receiver.stop()


def test_a_new_twilio_call_the_full_store_cannot_hold_hears_busy(procfile):
    server = procfile(TWILIO_AUTH_TOKEN=TWILIO_TOKEN, MAX_LIVE_CALLS="2")
    for _ in range(2):
        assert twilio(server, "/webhook/twilio/voice", call_fields("CA" + uuid.uuid4().hex)).find("Gather") is not None
    refused = twilio(server, "/webhook/twilio/voice", call_fields("CA" + uuid.uuid4().hex))
    assert refused.find("Reject") is not None and refused.find("Reject").get("reason") == "busy"
    assert refused.find("Gather") is None


# Every outgoing request of voicebot's: the platforms' REST APIs and the model's API are never redirected.

def test_the_model_api_redirecting_is_not_followed(procfile, hostile):
    internal = hostile("ok")
    model = hostile("redirect307", redirect_to=internal.url)
    server = procfile(ANTHROPIC_BASE_URL=model.url.rsplit("/", 1)[0])
    answer = turn(server, "model-redirect", "mk1")
    assert answer.status_code == 200
    assert answer.json()["response"] == "Sorry, I'm having trouble right now. Could you say that again?"
    assert len(model.arrived()) == 1 and internal.arrived() == []


def test_voipbin_redirecting_is_not_followed(hostile):
    from voicebot.voipbin.client import VoipbinClient
    from voicebot.voipbin.exceptions import VoipbinError

    internal = hostile("ok")
    api = hostile("redirect307", redirect_to=internal.url)
    client = VoipbinClient(api.url.rsplit("/", 1)[0], "access-key")
    try:
        with pytest.raises(VoipbinError, match="redirect"):
            client.request("POST", "/calls/x/hangup")
    finally:
        client.close()
    assert len(api.arrived()) == 1 and internal.arrived() == []
