"""Where callers put their API key, the key format itself, and which binds count as loopback."""

from __future__ import annotations

import hashlib
import logging
import re

import pytest

from earshot.accounts.keys import hash_secret, new_key, parse_key
from earshot.api.credentials import credential_from, redact_server_logs
from earshot.settings import Settings

KEY = "es_0123456789ab_" + "A1b2C3d4E5" * 4
OTHER = "es_ba9876543210_" + "z9Y8x7W6v5" * 4


@pytest.mark.parametrize(
    ("headers", "query", "subprotocols"),
    [
        ({"authorization": f"Bearer {KEY}"}, {}, ()),  # OpenAI
        ({"authorization": f"bearer   {KEY}  "}, {}, ()),
        ({"authorization": f"Token {KEY}"}, {}, ()),  # Deepgram
        ({"authorization": f"TOKEN {KEY}"}, {}, ()),
        ({"api-key": KEY}, {}, ()),  # Azure
        ({"api-key": f"  {KEY} "}, {}, ()),
        ({"x-api-key": KEY}, {}, ()),
        ({}, {}, (f"openai-insecure-api-key.{KEY}",)),  # OpenAI Realtime from a browser
        ({}, {}, ("realtime", f"openai-insecure-api-key.{KEY}")),
        ({}, {}, ("token", KEY)),  # Deepgram from a browser
        ({}, {}, ("Token", KEY)),
        ({}, {"api_key": KEY}, ()),
        ({}, {"api_key": f" {KEY} "}, ()),
    ],
)
def test_each_scheme_carries_the_key(
    headers: dict[str, str], query: dict[str, str], subprotocols: tuple[str, ...]
) -> None:
    assert credential_from(headers, query, subprotocols) == KEY


def test_authorization_wins() -> None:
    everything = {"authorization": f"Bearer {KEY}", "api-key": OTHER, "x-api-key": OTHER}
    assert credential_from(everything, {"api_key": OTHER}, ("token", OTHER)) == KEY
    assert credential_from({"authorization": f"Token {KEY}", "api-key": OTHER}, {}) == KEY
    # Then the headers, then subprotocols, then the query string.
    assert credential_from({"api-key": KEY, "x-api-key": OTHER}, {"api_key": OTHER}) == KEY
    assert credential_from({"x-api-key": KEY}, {"api_key": OTHER}, ("token", OTHER)) == KEY
    assert credential_from({}, {"api_key": OTHER}, (f"openai-insecure-api-key.{KEY}",)) == KEY


def test_no_credential() -> None:
    assert credential_from({}, {}) is None
    assert credential_from({}, {}, ()) is None
    assert credential_from({"content-type": "audio/wav"}, {"model": "whisper-1"}, ("realtime",)) is None
    # Schemes that aren't ours are no credential (not a garbled one).
    assert credential_from({"authorization": "Basic dXNlcjpwYXNz"}, {}) is None
    # A lone `token` subprotocol with nothing after it carries no key.
    assert credential_from({}, {}, ("token",)) is None


def test_empty_values_are_ignored() -> None:
    empty_headers = {"authorization": "Bearer   ", "api-key": "", "x-api-key": "  "}
    assert credential_from(empty_headers, {"api_key": ""}, ("openai-insecure-api-key.",)) is None
    assert credential_from({"authorization": "Bearer"}, {}) is None
    assert credential_from({"authorization": "Token "}, {}) is None
    assert credential_from({}, {"api_key": "   "}) is None
    # An empty source falls through to the next one that has the key.
    assert credential_from(empty_headers, {"api_key": KEY}) == KEY
    assert credential_from({"authorization": "Bearer "}, {}, ("token", KEY)) == KEY
    assert (
        credential_from({"api-key": " "}, {}, ("openai-insecure-api-key.", f"openai-insecure-api-key.{KEY}"))
        == KEY
    )


def test_empty_deepgram_subprotocol_is_ignored() -> None:
    assert credential_from({}, {"api_key": KEY}, ("token", "")) == KEY
    assert credential_from({}, {}, ("token", "")) is None


# --- The key format ---------------------------------------------------------------------------------


def test_new_key_is_well_formed_and_unique() -> None:
    made = [new_key() for _ in range(200)]
    for key_id, plaintext in made:
        assert re.fullmatch(r"es_[0-9a-f]{12}_[A-Za-z0-9]{40}", plaintext)
        parsed = parse_key(plaintext)
        assert parsed is not None
        assert parsed[0] == key_id
        assert plaintext == f"es_{key_id}_{parsed[1]}"
    assert len({key_id for key_id, _ in made}) == 200
    assert len({plaintext for _, plaintext in made}) == 200


def test_parse_key() -> None:
    assert parse_key(KEY) == ("0123456789ab", "A1b2C3d4E5" * 4)
    assert parse_key(f"  {KEY}\n") == ("0123456789ab", "A1b2C3d4E5" * 4)
    for bad in [
        "",
        "es_",
        KEY[:-1],
        KEY + "a",
        "es_0123456789AB_" + "A" * 40,  # ids are lowercase
        "es_0123456789a_" + "A" * 41,
        "sk_0123456789ab_" + "A" * 40,
        "es-0123456789ab-" + "A" * 40,
        "es_0123456789ab_" + "A" * 39 + "-",
        "es_0123456789ab_" + "A" * 39 + "é",
        f"Bearer {KEY}",
    ]:
        assert parse_key(bad) is None, bad


def test_hash_secret() -> None:
    secret = "A1b2C3d4E5" * 4
    digest = hash_secret(secret)
    assert digest == hashlib.sha256(secret.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert hash_secret(secret) == digest
    assert hash_secret(secret[:-1] + "6") != digest
    assert secret not in digest


# --- Loopback binds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("example.com", False),
    ],
)
def test_binds_loopback(host: str, loopback: bool) -> None:
    assert Settings(host=host).binds_loopback is loopback


def test_keys_in_query_strings_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    redact_server_logs()
    logger = logging.getLogger("uvicorn.error")
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        logger.info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/v1/realtime?intent=x&api_key=es_1_secret"
        )
    assert "es_1_secret" not in caplog.text
    assert "/v1/realtime?intent=x&api_key=***" in caplog.text
