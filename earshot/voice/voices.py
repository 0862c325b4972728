"""Voice names: OpenAI's voices mapped onto espeak-ng's, and which names espeak-ng may be asked for."""

from __future__ import annotations

import re

# OpenAI's voices, each an English espeak-ng voice with a variant (`+m3`: male 3, `+f2`: female 2) chosen so
# that the voices differ from one another and stay intelligible.
OPENAI_VOICES: dict[str, str] = {
    "alloy": "en-us",
    "ash": "en-us+m3",
    "ballad": "en-gb-x-rp+m1",
    "coral": "en-us+f2",
    "echo": "en-us+m1",
    "fable": "en-gb-x-rp",
    "nova": "en-us+f3",
    "onyx": "en-us+m7",
    "sage": "en-gb-x-rp+f4",
    "shimmer": "en-us+f4",
    "verse": "en-gb-x-rp+m2",
    "marin": "en-us+f5",
    "cedar": "en-us+m2",
}
# An espeak-ng voice as a caller may name it: a language or voice file (`en-us`, `en-gb-x-rp`, `de`) with an
# optional variant (`+f3`). Nothing that could name a path outside espeak-ng's data.
_ESPEAK_NAME = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{1,8})*(\+[a-z0-9]{1,16})?$")
MAX_VOICE_CHARS = 40


class UnknownVoice(ValueError):
    """No voice of this name; the message names the voices there are."""

    def __init__(self, voice: str) -> None:
        super().__init__(
            f"unknown voice {voice!r}: use one of {', '.join(OPENAI_VOICES)} or an espeak-ng voice such as "
            "en-us, en-gb-x-rp or en-us+f3"
        )
        self.voice = voice


def espeak_voice(voice: str) -> str:
    """The espeak-ng voice name for a requested voice: an OpenAI name mapped, an espeak-ng name as given.

    Raises UnknownVoice for a name that is neither; whether espeak-ng has the voice is its to say.
    """
    name = voice.strip().lower()
    if name in OPENAI_VOICES:
        return OPENAI_VOICES[name]
    if len(name) <= MAX_VOICE_CHARS and _ESPEAK_NAME.match(name):
        return name
    raise UnknownVoice(voice)
