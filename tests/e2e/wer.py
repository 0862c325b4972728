"""Word error rate against the shared clips' exact transcripts, and the one-shot decode to compare with."""

from __future__ import annotations

import re

import httpx

from tests.conftest import Clip, RunningServer


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions, insertions and deletions between two word sequences (Levenshtein)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref_word != hyp_word))
    return row[-1]


def one_shot(server: RunningServer, clip: Clip) -> str:
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": (clip.path.name, clip.path.read_bytes())},
        data={"model": "whisper-1", "response_format": "text"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.text
