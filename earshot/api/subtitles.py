"""Subtitle cue times shared by every renderer of SubRip and WebVTT (OpenAI formats, stored transcripts)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def milliseconds(seconds: float) -> int:
    """Whole milliseconds, half up on the decimal value as written; negative and NaN become 0."""
    if not seconds > 0:
        return 0
    return int(Decimal(repr(float(seconds))).scaleb(3).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _clock(seconds: float, separator: str) -> str:
    """HH:MM:SS<separator>mmm; hours grow past 99 rather than wrap."""
    hours, rest_ms = divmod(milliseconds(seconds), 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    secs, ms = divmod(rest_ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def srt_timestamp(seconds: float) -> str:
    """An SRT cue time, HH:MM:SS,mmm."""
    return _clock(seconds, ",")


def vtt_timestamp(seconds: float) -> str:
    """A WebVTT cue time, HH:MM:SS.mmm."""
    return _clock(seconds, ".")
