"""What the fake model answers: the markers it echoes, the call tools it uses, the sentences it adds."""

from __future__ import annotations

import re
import uuid
from typing import Any, Callable, Iterator

MARKER = re.compile(r"\bmk[0-9A-Za-z]+\b")
DEFAULT_REPLY = "I can help with that. Could you give me a bit more detail?"
_GOODBYE = re.compile(r"\b(good ?bye|bye)\b", re.I)
_PERSON = re.compile(r"\b(human|person|agent|representative)\b", re.I)


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """'Heard mk1 mk2.' for the markers of every user message in order."""
    markers = [m for msg in messages if msg["role"] == "user" for m in MARKER.findall(_text_of(msg))]
    return "Heard " + " ".join(markers) + "." if markers else DEFAULT_REPLY


def _text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content if block.get("type") == "text")


_ASKS_TOOL = re.compile(r"\btool:([a-zA-Z0-9_-]{1,64})")


def tool_to_use(body: dict[str, Any]) -> str | None:
    """The tool a model would use on the caller's last words, if it was offered and allowed.

    ``tool:<name>`` in the words asks for any declared tool; "goodbye" and "a
    human" for the call tools.
    """
    if (body.get("tool_choice") or {}).get("type") == "none":
        return None
    offered = {t.get("name") for t in body.get("tools") or []}
    last = _text_of(body["messages"][-1]) if body["messages"][-1]["role"] == "user" else ""
    asked = _ASKS_TOOL.search(last)
    if asked and asked.group(1) in offered:
        return asked.group(1)
    if "transfer_call" in offered and _PERSON.search(last):
        return "transfer_call"
    if "end_call" in offered and _GOODBYE.search(last):
        return "end_call"
    return None


def tool_answers(messages: list[dict[str, Any]]) -> str:
    """What the tools answered in the last message, as a model would repeat it."""
    results = [b for b in _blocks(messages[-1]) if b.get("type") == "tool_result"]
    if _text_of(messages[-1]).strip():
        return ""  # the caller spoke since: those results are old news
    said = []
    for result in results:
        content = result.get("content")
        text = content if isinstance(content, str) else " ".join(
            c.get("text", "") for c in content or [] if isinstance(c, dict))
        said.append(("The tool failed: " if result.get("is_error") else "The tool said: ") + text[:300])
    return " ".join(said)


class Pacer:
    """A reply's words at a model's pace: ``gap`` seconds between sentences (what was written is flushed
    first), and after ``break_after`` sentences (0: never) the writer dies mid-reply: ``broken``."""

    def __init__(self, gap: float, break_after: int, flush: Callable[[], None],
                 pause: Callable[[float], None]) -> None:
        self.gap, self.break_after, self.flush, self.pause = gap, break_after, flush, pause
        self.broken = False

    def words(self, text: str) -> Iterator[str]:
        """Each word (with the space before it), as written; stops early once ``broken``."""
        previous, sentences = "", 0
        for i, word in enumerate(text.split(" ") if text else []):
            if i and previous.endswith((".", "!", "?")):
                sentences += 1
                if sentences == self.break_after:
                    self.flush()
                    self.broken = True
                    return
                if self.gap:
                    self.flush()
                    self.pause(self.gap)
            yield word if i == 0 else " " + word
            previous = word


FURTHER_SENTENCES = ("I have noted that.", "Is there anything else I can help you with today?",
                     "Take your time.")


def _message(body: dict[str, Any], text: str) -> dict[str, Any]:
    prompt_words = sum(len(_text_of(m).split()) for m in body["messages"])
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt_words, "output_tokens": len(text.split())},
    }


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []
