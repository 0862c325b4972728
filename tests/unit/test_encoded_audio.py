"""Audio kept encoded reads back as the same samples as a whole decode, in blocks and piece by piece."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from earshot.audio.decode import EmptyAudio, container_blocks, decode_audio, encoded_audio_async, pcm16_blocks
from earshot.audio.encoded import EncodedAudio
from earshot.audio.pcm import Audio, float_to_pcm16
from earshot.audio.speech_reader import find_pieces, read_pieces
from tests.conftest import shared_audio

CLIP = "jfk/jfk.flac"


async def test_an_encoded_file_reads_as_its_whole_decode_in_any_blocks() -> None:
    data = shared_audio(CLIP).read_bytes()
    whole = decode_audio(data)
    encoded = await encoded_audio_async(partial(container_blocks, data))
    assert encoded.duration_s == whole.duration_s
    assert np.array_equal(encoded.samples, whole.samples)
    blocks = list(encoded.blocks(12_345))
    assert all(len(block) == 12_345 for block in blocks[:-1])
    assert np.array_equal(np.concatenate(blocks), whole.samples)


async def test_its_speech_pieces_and_their_samples_are_the_whole_decodes() -> None:
    data = shared_audio(CLIP).read_bytes()
    whole = decode_audio(data)
    encoded = EncodedAudio.counted(partial(container_blocks, data))
    pieces = await find_pieces(encoded)
    assert pieces and pieces == await find_pieces(Audio(whole.samples))
    read = [samples async for _, samples in read_pieces(encoded, pieces)]
    expected = [samples async for _, samples in read_pieces(whole, pieces)]
    assert all(np.array_equal(a, b) for a, b in zip(read, expected, strict=True))


async def test_raw_pcm_is_counted_at_its_rate_and_empty_audio_is_refused() -> None:
    pcm = float_to_pcm16(np.zeros(8_000 * 3, np.float32))
    encoded = await encoded_audio_async(partial(pcm16_blocks, pcm, sample_rate=8_000))
    assert encoded.duration_s == pytest.approx(3.0, abs=0.01)
    with pytest.raises(EmptyAudio):
        await encoded_audio_async(partial(container_blocks, b""))
