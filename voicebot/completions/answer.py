"""One request's turn, run on a thread of its own while the response is written: the call opened on its
first request, the last reply cut to what the caller heard, the turn taken, and everything it says
handed on in order (``AnswerSpeaker``), ending with ``Done`` or ``Failed``.

It knows no HTTP: the view reads ``next_said`` and writes chunks.
"""

from __future__ import annotations

import logging
import re
import threading
import time

from ..conversation import Conversation
from ..deadline import Deadline, put_in_effect
from ..tools import Action
from ..turn import Outcome
from .ask import Ask
from .speaker import Act, AnswerSpeaker, ClientGone, Done, Failed, Said, Words

log = logging.getLogger(__name__)

# Past the turn's own deadline, how long the response waits for a turn thread that has not finished.
STRAGGLER_SECONDS = 2.0


def _plain(text: str) -> str:
    return re.sub(r"\W+", " ", text).lower().strip()


def cut_short(heard: str | None, said: str) -> bool:
    """The platform's last assistant message is less than voicebot said: the caller talked over it."""
    if heard is None or not said:
        return False
    plain_heard, plain_said = _plain(heard), _plain(said)
    return plain_heard != plain_said and plain_said.startswith(plain_heard)


class Answer:
    """A turn for one request, as its words come: ``start`` it, then read ``next_said`` until Done/Failed."""

    def __init__(self, conversation: Conversation, ask: Ask, speaker: AnswerSpeaker, deadline: Deadline) -> None:
        self.conversation, self.ask, self.speaker, self.deadline = conversation, ask, speaker, deadline
        self._thread = threading.Thread(target=self._run, name=f"completion {ask.call_id[:32]}", daemon=True)

    def start(self) -> "Answer":
        self._thread.start()
        return self

    def run_here(self) -> "Answer":
        """For a request not streamed: the turn on the request's own thread."""
        self._run()
        return self

    def next_said(self) -> Said:
        """What the turn says next; Done once it is over (or its thread ran past every deadline)."""
        wait = max(0.0, self.deadline.remaining()) + STRAGGLER_SECONDS
        try:
            return self.speaker.said.get(timeout=wait)
        except Exception:  # queue.Empty: the turn is stuck past its deadline; the answer ends here
            log.error("turn still running past its deadline call_id=%s", self.ask.call_id)
            return Done({}, fallback=True)

    def stop(self) -> None:
        """The platform stopped reading: no more of the reply is said."""
        self.speaker.gone.set()

    def _run(self) -> None:
        put_in_effect(self.deadline)  # this thread's waits (a Redis step) keep the request's budget
        said = self.speaker.said
        try:
            said.put(self._turn())
        except ClientGone:
            said.put(Done({}))
        except Exception as exc:
            said.put(Failed(exc))
        finally:
            put_in_effect(None)

    def _turn(self) -> Done:
        ask, conversation = self.ask, self.conversation
        session = conversation.peek(ask.call_id)
        if session is None:
            greeting = conversation.start_call(ask.call_id, ask.caller, called=ask.called, variables=ask.variables,
                                               deadline=self.deadline)
            if greeting is None:  # the call has ended for good: the platform is told to end it too
                self.speaker.said.put(Act(Action("hangup", reason="the call has ended")))
                return Done({})
            if not ask.words:
                self.speaker.said.put(Words(greeting))
                return Done({})
        elif not ask.words:
            # The opening asked again (the platform sent its first request twice): the same greeting.
            if not session.get("turns"):
                self.speaker.said.put(Words(conversation.greeting_for(session)))
            return Done({})
        else:
            last = session.get("last_turn")
            if cut_short(ask.heard, last["reply"] if last else ""):
                conversation.cut_reply(ask.call_id, ask.heard or "")
        started = time.monotonic()
        turn = conversation.take_turn(ask.call_id, ask.words, ask.caller, event_id=ask.event_id,
                                      speaker=self.speaker, deadline=self.deadline)
        if turn.outcome is Outcome.DUPLICATE:
            if turn.reply:
                self.speaker.said.put(Words(turn.reply))
        elif turn.outcome is Outcome.CALL_ENDED:
            self.speaker.said.put(Act(Action("hangup", reason="the call has ended")))
        log.debug("completion turn call_id=%s took %.3fs", ask.call_id, time.monotonic() - started)
        return Done(dict(turn.usage), fallback=turn.fallback)
