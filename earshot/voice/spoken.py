"""What the voice agent said, sans-I/O: the answer cut into sentences as it streams, the audio sent of each,
the text a listener heard when the answer was cut off, and when a slow tool call earns a filler line.

Nothing here reads a clock: timers are given `now` (seconds, monotonic).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from earshot.voice.pieces import text_pieces

# PCM16 mono at 24 kHz: bytes per millisecond of audio.
PCM_BYTES_PER_MS = 48
# A sentence cut off while it was still being synthesized has no known length: this many ms per character
# (espeak-ng at 175 words per minute) stands in for it.
MS_PER_CHAR_ESTIMATE = 65


class SentenceCutter:
    """Text deltas in, whole sentences out as soon as the next one has begun; the rest at `finish`."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """The sentences this delta completed."""
        self._buffer += delta
        pieces = text_pieces(self._buffer)
        if len(pieces) < 2:
            return []
        # The last piece may still grow; keep the space after it, so the next delta's word stays apart.
        self._buffer = pieces[-1] + (" " if self._buffer[-1:].isspace() else "")
        return pieces[:-1]

    def finish(self) -> list[str]:
        """What is left, once the answer's text is all in."""
        rest, self._buffer = text_pieces(self._buffer), ""
        return rest


@dataclass(slots=True)
class _Sentence:
    text: str
    audio_bytes: int = 0
    synthesized: bool = False


@dataclass(slots=True)
class SpokenAnswer:
    """One assistant message item as it goes out: its sentences and the audio sent of each."""

    item_id: str
    with_audio: bool = True
    sentences: list[_Sentence] = field(default_factory=list)

    def sentence_started(self, text: str) -> None:
        self.sentences.append(_Sentence(text))

    def text_sent(self, delta: str) -> None:
        """Text-only answers are one running piece of text."""
        if not self.sentences:
            self.sentences.append(_Sentence(""))
        self.sentences[-1].text += delta

    def audio_sent(self, pcm_bytes: int) -> None:
        self.sentences[-1].audio_bytes += pcm_bytes

    def sentence_done(self) -> None:
        self.sentences[-1].synthesized = True

    @property
    def audio_ms(self) -> int:
        """Milliseconds of audio sent so far."""
        return sum(sentence.audio_bytes for sentence in self.sentences) // PCM_BYTES_PER_MS

    @property
    def text(self) -> str:
        """Every sentence begun."""
        return " ".join(sentence.text for sentence in self.sentences)

    def heard(self, played_ms: int | None = None) -> str:
        """The text a listener heard: the sentences whose audio was played, and the played share of the words
        of the one cut off. `played_ms` is what the client says it played (a truncate); None: all sent.
        Text-only answers were heard as far as they were sent."""
        if not self.with_audio:
            return self.text
        left_ms = self.audio_ms if played_ms is None else min(played_ms, self.audio_ms)
        heard: list[str] = []
        for sentence in self.sentences:
            sent_ms = sentence.audio_bytes // PCM_BYTES_PER_MS
            length_ms = (
                sent_ms if sentence.synthesized else max(sent_ms, len(sentence.text) * MS_PER_CHAR_ESTIMATE)
            )
            if length_ms and left_ms >= length_ms:
                heard.append(sentence.text)
                left_ms -= length_ms
                continue
            words = sentence.text.split()
            share = min(left_ms, sent_ms) / length_ms if length_ms else 0.0
            spoken_words = words[: int(len(words) * share)]
            if spoken_words:
                heard.append(" ".join(spoken_words))
            break
        return " ".join(heard)


class FillerTimer:
    """When a tool call has run `after_ms` without its output, the filler is due: once per call."""

    def __init__(self, after_ms: int) -> None:
        self.after_ms = after_ms
        self._started_at: float | None = None
        self._spoken = False

    def call_started(self, now: float) -> None:
        if self._started_at is None:
            self._started_at = now
            self._spoken = False

    def call_answered(self) -> None:
        self._started_at = None

    def wait_s(self, now: float) -> float | None:
        """Seconds until the filler is due; None when it is not to be spoken (no call, or spoken already)."""
        if self._started_at is None or self._spoken:
            return None
        return max(0.0, self._started_at + self.after_ms / 1000 - now)

    def due(self, now: float) -> bool:
        """True once, when the call has run long enough; the caller speaks the filler then."""
        wait = self.wait_s(now)
        if wait is None or wait > 0:
            return False
        self._spoken = True
        return True
