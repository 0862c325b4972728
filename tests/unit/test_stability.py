"""Early finals: words that stop changing are finalized before the turn ends, each once, in order."""

from __future__ import annotations

import itertools

from earshot.streaming.events import Final, Partial
from earshot.streaming.stability import TurnText


def hypotheses(text: str, every_s: float, until_s: float) -> list[Partial]:
    """The same growing hypothesis reported every `every_s` seconds, as an incremental engine does."""
    words = text.split()
    reports = []
    t = every_s
    while t <= until_s + 1e-9:
        heard = words[: max(1, round(len(words) * t / until_s))]
        reports.append(Partial(" ".join(heard), 0.0, t))
        t += every_s
    return reports


SAID = "go forward ten meters then turn left now please"


def test_early_finals_cover_consecutive_stretches_of_the_turn() -> None:
    turn = TurnText()
    events = [
        event for partial in hypotheses(SAID, 0.5, 8.0) for event in turn.on_result(partial, offset_s=10.0)
    ]
    finals = [event for event in events if isinstance(event, Final)]
    assert len(finals) >= 2, "a long turn finalizes words before it ends"
    assert finals[0].start == 10.0, "the first early final starts where the turn does"
    for before, after in itertools.pairwise(finals):
        assert after.start == before.end, "each early final starts where the previous one ended"
    partials = [event for event in events if isinstance(event, Partial)]
    assert partials[-1].start == finals[-1].end, "the tentative rest starts after the finalized words"
    said = " ".join(final.text for final in finals).split()
    assert said == SAID.split()[: len(said)]


def test_drafts_are_never_finalized_early_and_the_full_decode_is_the_final_text() -> None:
    # Drafts of a phrase that is decoded again in full at its end: however long they stay the same, none of
    # their words is final before that decode, whose words alone are the final text.
    turn = TurnText()
    drafts = [Partial(p.text, p.start, p.end, draft=True) for p in hypotheses(SAID, 0.5, 8.0)]
    events = [event for draft in drafts for event in turn.on_result(draft, offset_s=0.0)]
    assert not any(isinstance(event, Final) for event in events)
    assert events and isinstance(events[-1], Partial) and events[-1].text == SAID
    full = "Go forward ten metres, then turn left now, please."
    finals = turn.on_result(Final(full, 0.0, 8.0), offset_s=0.0)
    assert [final.text for final in finals] == [full]


def test_a_draft_is_not_made_final_when_the_full_decode_has_no_words() -> None:
    # Whether a draft came before the phrase's end depends on timing; the full decode's silence does not.
    turn = TurnText()
    turn.on_result(Partial("Thank you.", 0.0, 1.0, draft=True), offset_s=0.0)
    assert turn.flush() == []
