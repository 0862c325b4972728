"""A tiny random-weight Whisper model in CTranslate2 format, built without torch, for tests and benches.

Its text is meaningless; it exercises faster-whisper's real load, feature, decode, timestamp and word
alignment code in a fraction of a second. The vocabulary is byte-level (256 symbols, no merges) followed by
Whisper's special tokens and the 1501 timestamp tokens, in Whisper's order, so faster-whisper's id arithmetic
holds (text < `<|endoftext|>`, timestamps start right after `<|notimestamps|>`). With fewer than 51865 tokens
the model is English-only to both CTranslate2 and faster-whisper.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

D_MODEL = 64
HEADS = 2
FFN = 128
ENCODER_LAYERS = 1
DECODER_LAYERS = 2
N_MELS = 80
ENCODER_POSITIONS = 1500  # 30 s of 10 ms mel frames, halved by the second convolution
DECODER_POSITIONS = 448
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)
TEXT_SYMBOLS = frozenset("abcdefghijklmnopqrstuvwxyz\u0120")  # byte-level symbols; U+0120 is the space
TIMESTAMP_TOKENS = tuple(f"<|{i * 0.02:.2f}|>" for i in range(1501))


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer with Whisper's special and timestamp tokens after its 256 symbols."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([*SPECIAL_TOKENS, *TIMESTAMP_TOKENS])
    return tokenizer


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.05).astype(np.float32)


def _layer_norm(spec: Any) -> None:
    spec.gamma = np.ones(D_MODEL, dtype=np.float32)
    spec.beta = np.zeros(D_MODEL, dtype=np.float32)


def _linear(spec: Any, rng: np.random.Generator, out_dim: int, in_dim: int, bias: bool = True) -> None:
    spec.weight = _weights(rng, out_dim, in_dim)
    if bias:
        spec.bias = _weights(rng, out_dim)


def _attention(spec: Any, rng: np.random.Generator, self_attention: bool) -> None:
    _layer_norm(spec.layer_norm)
    if self_attention:
        _linear(spec.linear[0], rng, 3 * D_MODEL, D_MODEL)
    else:
        _linear(spec.linear[0], rng, D_MODEL, D_MODEL)
        _linear(spec.linear[1], rng, 2 * D_MODEL, D_MODEL)
    _linear(spec.linear[-1], rng, D_MODEL, D_MODEL)


def _ffn(spec: Any, rng: np.random.Generator) -> None:
    _layer_norm(spec.layer_norm)
    _linear(spec.linear_0, rng, FFN, D_MODEL)
    _linear(spec.linear_1, rng, D_MODEL, FFN)


def whisper_spec(vocabulary: list[str], seed: int = 0) -> Any:
    """A WhisperSpec filled with small random weights for `vocabulary`."""
    from ctranslate2.specs import whisper_spec as ws

    rng = np.random.default_rng(seed)
    spec = ws.WhisperSpec(ENCODER_LAYERS, HEADS, DECODER_LAYERS, HEADS)
    encoder, decoder = spec.encoder, spec.decoder
    encoder.conv1.weight = _weights(rng, D_MODEL, N_MELS, 3)
    encoder.conv1.bias = _weights(rng, D_MODEL)
    encoder.conv2.weight = _weights(rng, D_MODEL, D_MODEL, 3)
    encoder.conv2.bias = _weights(rng, D_MODEL)
    encoder.position_encodings.encodings = _weights(rng, ENCODER_POSITIONS, D_MODEL)
    _layer_norm(encoder.layer_norm)
    for layer in encoder.layer:
        _attention(layer.self_attention, rng, self_attention=True)
        _ffn(layer.ffn, rng)

    decoder.embeddings.weight = _weights(rng, len(vocabulary), D_MODEL)
    decoder.position_encodings.encodings = _weights(rng, DECODER_POSITIONS, D_MODEL)
    _layer_norm(decoder.layer_norm)
    _linear(decoder.projection, rng, len(vocabulary), D_MODEL, bias=False)
    # Only lower-case letters and spaces can win among the text symbols, so the meaningless text is printable.
    decoder.projection.bias = np.array(
        [0.0 if i >= 256 or token in TEXT_SYMBOLS else -1e4 for i, token in enumerate(vocabulary)],
        dtype=np.float32,
    )
    for layer in decoder.layer:
        _attention(layer.self_attention, rng, self_attention=True)
        _attention(layer.attention, rng, self_attention=False)
        _ffn(layer.ffn, rng)

    spec.register_vocabulary(vocabulary)
    config = spec.config
    config.suppress_ids = []
    config.suppress_ids_begin = [vocabulary.index("<|endoftext|>")]
    config.lang_ids = []
    # As the transformers converter does without known heads: every head of the last half of the layers.
    config.alignment_heads = list(itertools.product(range(DECODER_LAYERS // 2, DECODER_LAYERS), range(HEADS)))
    return spec


def build(output_dir: Path, seed: int = 0) -> Path:
    """Write a tiny Whisper model (model.bin, config.json, vocabulary, tokenizer.json) into `output_dir`."""
    from ctranslate2.converters.converter import Converter

    tokenizer = build_tokenizer()
    vocabulary = [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]

    class TinyWhisperConverter(Converter):
        def _load(self) -> Any:
            return whisper_spec(vocabulary, seed)

    TinyWhisperConverter().convert(str(output_dir), force=True)
    tokenizer.save(str(output_dir / "tokenizer.json"))
    (output_dir / "preprocessor_config.json").write_text(
        json.dumps({"feature_size": N_MELS, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30})
    )
    return output_dir


@functools.cache
def tiny_whisper_model() -> Path:
    """A tiny Whisper model directory, built once per process and removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="earshot-tiny-whisper-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build(root / "model")
