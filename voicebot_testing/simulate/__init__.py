"""``voicebot simulate``: play a campaign of concurrent calls against running voicebots, and check isolation.

Every caller turn carries a unique marker (``mk...``). Against a voicebot
whose model is ``voicebot fake-llm`` (which echoes the markers of every user
message it was sent), each reply must list exactly its own call's markers, in
order: anything else is a bleed (another call's marker), a loss, a duplicate
or a reordering, and is counted with an example. Latency is measured per
turn; the server's ``Server-Timing: llm;dur=`` header gives the model's share,
and the rest is voicebot's overhead.
"""

from .campaign import Campaign
from .connection import HTTPConnection
from .report import Tally, check_reply, format_summary, ok, percentile, progress_printer

__all__ = ["Campaign", "HTTPConnection", "Tally", "check_reply", "format_summary", "ok", "percentile",
           "progress_printer"]
