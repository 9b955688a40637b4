"""Turn a model's text into something a TTS engine can say.

Models write for screens: markdown, emoji, links, bullet lists. Read aloud,
those come out as "asterisk asterisk" or a spelled-out URL, so they go before
the reply leaves, and the reply is cut at a sentence boundary so the caller
never hears half a sentence.
"""

from __future__ import annotations

import re

_CODE_FENCE = re.compile(r"```.*?(```|$)", re.S)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3}|~~)(\S(?:.*?\S)?)\1")
_LINE_MARKUP = re.compile(r"^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+•]\s+|\d{1,3}[.)]\s+)", re.M)
_HORIZONTAL_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.M)
_TABLE_PIPES = re.compile(r"\s*\|\s*")
_LEFTOVER_MARKS = re.compile(r"[*_#`~<>\[\]{}|\\]")
# Pictographs, dingbats, flags, variation selectors and joiners: TTS engines
# either skip them or read out their names.
_EMOJI = re.compile(
    "[\U0001F000-\U0001FAFF\U00002600-\U000027BF\U0001F1E6-\U0001F1FF"
    "\U00002B00-\U00002BFF\U0000FE0F\U0000200D\U000020E3\U0001F3FB-\U0001F3FF]"
)
# Anything any of the rules below would change; most replies have none of it.
_NEEDS_WORK = re.compile(
    r"[*_#`~<>\[\]{}|\\\n\t\r•]|  |https?://|www\.|^\s*\d{1,3}[.)]\s|^\s*[-+]\s|^\s|\s$|\s[,.;:!?]"
    "|[\U0001F000-\U0001FAFF\U00002600-\U000027BF\U00002B00-\U00002BFF\U0000FE0F\U0000200D\U000020E3]",
    re.I,
)
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_SENTENCE_END = re.compile(r"[.!?…](?=[\"')\]]*(\s|$))")


def make_speakable(text: str, max_chars: int) -> str:
    """Plain words, single spaces, at most ``max_chars``; '' when nothing speakable is left."""
    if _NEEDS_WORK.search(text):
        text = _clean(text)
    return _cut(text.strip(" ,;:"), max_chars)


def speakable_piece(text: str) -> str:
    """A piece of a sentence as the model wrote it, its markup dropped and its spacing at either end kept, so
    that pieces said one after another join as the model wrote them."""
    core = text.strip()
    if not core or not _NEEDS_WORK.search(core):
        return text
    lead, trail = text[:len(text) - len(text.lstrip())], text[len(text.rstrip()):]
    cleaned = _clean(core)
    return lead + cleaned + trail if cleaned else lead


def _clean(text: str) -> str:
    text = _CODE_FENCE.sub(" ", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("", text)
    text = _HORIZONTAL_RULE.sub(" ", text)
    text = _LINE_MARKUP.sub("", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _TABLE_PIPES.sub(", ", text) if "|" in text else text
    text = _LEFTOVER_MARKS.sub(" ", text)
    text = _EMOJI.sub("", text)
    text = _SPACE.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = text[: max_chars + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(head) if m.end() <= max_chars]
    if ends:
        return head[: ends[-1]].strip()
    # One long sentence: stop at the last whole word and close it.
    words = head[:max_chars].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return words + "." if words else ""


# A sentence end in a stream: the mark, and a space or the end of what has come so far; models
# pause after a sentence as after any token, so waiting for the next word would cost one token's
# time. A number before a point at the end is not taken for one ("3." may yet become "3.5").
_STREAMED_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?:\s|$)")
_ENDS_IN_A_NUMBER = re.compile(r"(?:^|\s)[\d,]+\.$")


def complete_sentences(buffer: str) -> tuple[str, str]:
    """Split streamed text into its whole sentences so far and the unfinished rest."""
    end = 0
    for match in _STREAMED_SENTENCE_END.finditer(buffer):
        if match.end() == len(buffer) and _ENDS_IN_A_NUMBER.search(buffer[:match.end()]):
            continue
        end = match.end()
    return buffer[:end], buffer[end:]
