"""The LLM adapter interface: one synchronous call per model round."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypedDict

from ..tools import Tool


class Message(TypedDict):
    """One message of the history, as the Messages API takes it."""

    role: str  # "user" or "assistant", first "user"
    content: Any  # text, or a list of content blocks (text, tool_use, tool_result)


@dataclass(frozen=True)
class ToolUse:
    """A tool the model asked to use: its id, name and input."""

    id: str
    name: str
    input: dict[str, Any]

    def block(self) -> dict[str, Any]:
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input}


@dataclass(frozen=True)
class Reply:
    """What the model answered: its text, the tools it asked for, why it stopped, its tokens."""

    text: str
    tool_uses: list[ToolUse] = field(default_factory=list)
    # Tokens billed for this call: input, cache_write, cache_read, output.
    usage: dict[str, int] = field(default_factory=dict)


# Called with the sentences streamed so far; False stops the stream.
OnText = Callable[[str], bool]


class LLM(ABC):
    """The one interface every model adapter implements (Anthropic's, the offline responder): a reply within a
    deadline, given the system prompt, the history and the tools."""

    name = "llm"

    @abstractmethod
    def reply(self, system: str, messages: Sequence[Message], timeout: float,
              tools: Sequence[Tool] = (), allow_tools: bool = True, *, force_tool: str | None = None) -> Reply:
        """The model's next turn in the conversation: its words, and any tools it uses.

        ``tools`` are offered (and define the tool blocks in ``messages``); with
        ``allow_tools`` False the model must answer in words only this time;
        with ``force_tool`` it must use that tool (its input is then shaped by
        the tool's schema: a post-call analysis).
        Raises LLMTimeout, LLMUnavailable or LLMRejected; never a vendor's error.
        """

    def stream_reply(self, system: str, messages: Sequence[Message], timeout: float, on_text: OnText,
                     tools: Sequence[Tool] = (), allow_tools: bool = True, *, as_written: bool = False) -> Reply:
        """As ``reply``, handing ``on_text`` each run of whole sentences as soon as the model has written it.

        ``on_text`` returns False to stop the model (the caller talked over
        the bot): the Reply then holds what was handed on. An adapter that
        cannot stream hands on nothing and returns the whole reply, which the
        caller then delivers as usual. If the model fails after some text was
        handed on, the error is raised all the same: the caller knows what it said.
        With ``as_written``, ``on_text`` gets the words as each read of the
        stream brings them, mid-sentence too (a front end that makes its own
        sentences for its speech, and wants the first word at once).
        """
        return self.reply(system, messages, timeout, tools, allow_tools)

    def close(self) -> None:
        """Let go of connections."""


def text_of(message: Message) -> str:
    """The words of a message, whichever form its content takes."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
