"""Past its capacity a worker sheds webhooks at once (503, Retry-After) instead of queueing them."""

from __future__ import annotations

import threading
import time

from voicebot_testing.fake_voipbin import FakeVoipbin
from voicebot.runtime import runtime_of

from .support import wait_for
from .test_voipbin import FETCH_TOKEN, OUR_NUMBER, SECRET, post_event


def test_past_capacity_a_turn_is_shed_at_once_and_fetch_never_is(make_app, fake_llm):
    with FakeVoipbin() as voipbin:
        app = make_app(WEB_THREADS=32, VOIPBIN_WEBHOOK_SECRET=SECRET, VOIPBIN_ACCESS_KEY=voipbin.access_key,
                       VOIPBIN_API_URL=voipbin.api_url, VOIPBIN_NUMBERS=(OUR_NUMBER,),
                       VOIPBIN_FETCH_TOKEN=FETCH_TOKEN)
        runtime_of(app).admission.limit = 1  # as if 1 of its threads were left for turns
        fake_llm.latency = 1.0
        busy = threading.Thread(target=lambda: app.test_client().post(
            "/webhook/transcript", json={"call_id": "slow", "transcript": "mk1"}))
        busy.start()
        wait_for(lambda: runtime_of(app).admission.in_flight == 1, what="a turn in flight")
        started = time.monotonic()
        shed = app.test_client().post("/webhook/transcript", json={"call_id": "other", "transcript": "mk1"})
        assert time.monotonic() - started < 0.5  # not queued behind the slow turn
        assert shed.status_code == 503 and shed.get_json()["error"] == "overloaded"
        assert shed.headers["Retry-After"] == "1"
        event = post_event(app.test_client(), "call_created", {"id": "x"})
        assert event.status_code == 503  # VoIPBin sends it again a second later
        fetched = app.test_client().post(f"/webhook/voipbin/fetch?token={FETCH_TOKEN}",
                                         json={"activeflow_id": "a", "reference_id": "c"})
        assert fetched.status_code == 200  # a fetch is never shed: anything else hangs the call up
        busy.join()
        assert runtime_of(app).admission.in_flight == 0
        again = app.test_client().post("/webhook/transcript", json={"call_id": "other", "transcript": "mk2"})
        assert again.status_code == 200


def test_the_in_flight_limit_keeps_threads_back_only_where_there_are_plenty():
    from voicebot.admission import in_flight_limit

    assert in_flight_limit(256) == 252 and in_flight_limit(32) == 28
    assert in_flight_limit(4) == 4  # a few threads: short requests queue harmlessly
