from __future__ import annotations

import pytest

from voicebot.speakable import complete_sentences, make_speakable


@pytest.mark.parametrize("raw, spoken", [
    ("**Sure!** Your order _ships_ today.", "Sure! Your order ships today."),
    ("# Options\n- Refund\n- Exchange\n1. Call back", "Options Refund Exchange Call back"),
    ("See [our site](https://acme.example/help) or https://acme.example.", "See our site or"),
    ("Great 🎉👍 news!", "Great news!"),
    ("Use `reset` now.", "Use reset now."),
    ("Hello   there,\n\n  friend.", "Hello there, friend."),
    ("> quoted line", "quoted line"),
    ("", ""),
    ("🙂 ***", ""),
])
def test_markup_emoji_and_urls_go(raw, spoken):
    assert make_speakable(raw, 300) == spoken


def test_long_replies_are_cut_at_a_sentence_boundary():
    text = "First sentence here. Second one is a bit longer! Third would overflow the limit?"
    assert make_speakable(text, 50) == "First sentence here. Second one is a bit longer!"
    assert make_speakable(text, 25) == "First sentence here."


def test_one_long_sentence_is_cut_at_a_word():
    spoken = make_speakable("word " * 100, 42)
    assert len(spoken) <= 43 and spoken.endswith("word.")


def test_the_fast_path_skips_only_text_the_rules_would_leave_alone():
    import random

    from voicebot.speakable import _NEEDS_WORK, _clean

    alphabet = "ab c.,!?;:-+1*_#`~<>[]{}|\\\n\t()'\"/:wh.tpsé😀•" + " " * 5
    rng = random.Random(7)
    plain = 0
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        if not _NEEDS_WORK.search(text):
            plain += 1
            assert _clean(text) == text, repr(text)
    assert plain > 500  # the check above really ran on many strings


@pytest.mark.parametrize("streamed, whole, rest", [
    ("Heard mk1.", "Heard mk1.", ""),  # a model pauses after a sentence as after any token
    ("Hello there. How", "Hello there. ", "How"),
    ("Hi! Can I help? Su", "Hi! Can I help? ", "Su"),
    ("It costs 3.", "", "It costs 3."),  # may yet be 3.5
    ("It costs 3.5 dollars. Ok", "It costs 3.5 dollars. ", "Ok"),
    ("no end yet", "", "no end yet"),
])
def test_streamed_text_is_handed_on_in_whole_sentences(streamed, whole, rest):
    assert complete_sentences(streamed) == (whole, rest)
