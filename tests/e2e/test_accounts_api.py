"""Keys, auth schemes and error shapes against a real server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest

from earshot.routing.catalog import OPENAI_MODEL_NAMES, OPENAI_SPEECH_MODEL_NAMES
from earshot.store.db import Database
from earshot.store.repositories import DialRepository
from tests.conftest import (
    ADMIN_TOKEN,
    BACKENDS,
    SHORT_CLIP_MS,
    Admin,
    RunningServer,
    fresh_database,
    start_server,
    stop_server,
    transcribe_request,
    wait_until,
)

PLAINTEXTS: list[str] = []


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    """A server with an admin token on a fresh database of each backend, and that database's URL."""
    tmp = tmp_path_factory.mktemp(f"accounts-{request.param}")
    with fresh_database(request.param, tmp) as url:
        server = start_server(tmp, {"EARSHOT_DATABASE_URL": url, "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN})
        try:
            yield server, url
        finally:
            stop_server(server)


@pytest.fixture(scope="module")
def server(backend: tuple[RunningServer, str]) -> RunningServer:
    return backend[0]


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Admin:
    return Admin(server)


def new_key(admin: Admin, **fields: object) -> tuple[str, str]:
    key_id, plaintext = admin.create_key(**fields)
    PLAINTEXTS.append(plaintext)
    return key_id, plaintext


def sdk(server: RunningServer, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=retries)


def test_the_openai_sdk_transcribes_with_a_key_and_its_usage_is_metered(
    server: RunningServer, admin: Admin, short_wav: bytes
) -> None:
    key_id, key = new_key(admin)
    result = sdk(server, key).audio.transcriptions.create(model="whisper-1", file=("a.wav", short_wav))
    assert result.text
    usage = httpx.get(f"{server.base_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
    assert usage["key"]["id"] == key_id
    assert usage["total"]["requests"] == 1
    assert usage["total"]["audio_seconds"] == SHORT_CLIP_MS / 1000
    assert usage["data"] == [
        {
            "model": "whisper-tiny.en",
            "requests": 1,
            "audio_seconds": 1.5,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "quantity": 1.5,
            "cost": 0.0,
        }
    ]


@pytest.mark.parametrize(
    "place",
    ["bearer", "token", "api-key", "query"],
)
def test_every_auth_scheme_is_accepted(
    server: RunningServer, admin: Admin, short_wav: bytes, place: str
) -> None:
    _, key = new_key(admin)
    headers = {
        "bearer": {"Authorization": f"Bearer {key}"},
        "token": {"Authorization": f"Token {key}"},
        "api-key": {"api-key": key},
        "query": {},
    }[place]
    params = {"api_key": key} if place == "query" else {}
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("a.wav", short_wav, "audio/wav")},
        headers=headers,
        params=params,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    wrong = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("a.wav", short_wav, "audio/wav")},
        headers={"api-key": key[:-1] + ("x" if key[-1] != "x" else "y")},
        timeout=60,
    )
    assert wrong.status_code == 401


def test_missing_unknown_revoked_and_expired_keys_get_401(
    server: RunningServer, admin: Admin, short_wav: bytes
) -> None:
    new_key(admin)  # keys exist, so anonymous access is over
    missing = transcribe_request(server, short_wav, None)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"

    with pytest.raises(openai.AuthenticationError) as unknown:
        sdk(server, "es_000000000000_" + "a" * 40).audio.transcriptions.create(
            model="whisper-1", file=("a.wav", short_wav)
        )
    assert unknown.value.code == "invalid_api_key"

    key_id, key = new_key(admin)
    assert transcribe_request(server, short_wav, key).status_code == 200
    admin.revoke(key_id)
    with pytest.raises(openai.AuthenticationError) as revoked:
        sdk(server, key).audio.transcriptions.create(model="whisper-1", file=("a.wav", short_wav))
    assert "revoked" in revoked.value.message

    # A time without a zone is UTC, as in the CLI.
    _, later = new_key(admin, expires_at="2999-01-01")
    assert transcribe_request(server, short_wav, later).status_code == 200

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    _, expired_key = new_key(admin, expires_at=past)
    response = transcribe_request(server, short_wav, expired_key)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_a_model_outside_the_keys_list_gets_403(
    server: RunningServer, admin: Admin, short_wav: bytes
) -> None:
    _, key = new_key(admin, models=["some-other-model"])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(server, key).audio.transcriptions.create(model="whisper-1", file=("a.wav", short_wav))
    assert denied.value.status_code == 403
    assert denied.value.code == "model_not_allowed"
    # Listing the canonical id allows its aliases too, and listing an alias allows the model by any name.
    _, allowed = new_key(admin, models=["whisper-tiny.en"])
    assert transcribe_request(server, short_wav, allowed).status_code == 200
    _, by_alias = new_key(admin, models=["whisper-1"])
    assert transcribe_request(server, short_wav, by_alias, model="").status_code == 200
    assert transcribe_request(server, short_wav, by_alias, model="whisper-tiny.en").status_code == 200
    assert transcribe_request(server, short_wav, by_alias, model="gpt-4o-transcribe").status_code == 200
    # The other embedded model is another model: not allowed by the default model's names.
    assert transcribe_request(server, short_wav, by_alias, model="pocketsphinx").status_code == 403


def test_models_need_a_key_and_show_only_what_it_may_use(server: RunningServer, admin: Admin) -> None:
    new_key(admin)
    with pytest.raises(openai.AuthenticationError):
        sdk(server, "not-a-key").models.list()
    _, everything = new_key(admin)
    listed = {model.id: model for model in sdk(server, everything).models.list()}
    assert set(listed) == {
        "whisper-tiny.en",
        "pocketsphinx",
        *OPENAI_MODEL_NAMES,
        "espeak",
        *OPENAI_SPEECH_MODEL_NAMES,
    }
    assert listed["gpt-4o-transcribe"].alias_of == "whisper-tiny.en"  # type: ignore[attr-defined]
    assert listed["pocketsphinx"].alias_of is None  # type: ignore[attr-defined]
    _, none_of_them = new_key(admin, models=["another-model"])
    assert list(sdk(server, none_of_them).models.list()) == []
    with pytest.raises(openai.NotFoundError):
        sdk(server, none_of_them).models.retrieve("whisper-1")
    assert sdk(server, everything).models.retrieve("whisper-1").id == "whisper-1"


def test_requests_over_the_keys_rate_get_429_with_retry_after(
    server: RunningServer, admin: Admin, short_wav: bytes
) -> None:
    _, key = new_key(admin, rpm=2)
    assert transcribe_request(server, short_wav, key).status_code == 200
    assert transcribe_request(server, short_wav, key).status_code == 200
    limited = transcribe_request(server, short_wav, key)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    with pytest.raises(openai.RateLimitError):
        sdk(server, key).audio.transcriptions.create(model="whisper-1", file=("a.wav", short_wav))


def test_exhausted_credit_gets_insufficient_quota_without_sdk_retries(
    server: RunningServer, admin: Admin, short_wav: bytes
) -> None:
    key_id, key = new_key(admin, credits_seconds=2.0)
    assert transcribe_request(server, short_wav, key).status_code == 200
    assert admin.key(key_id)["credits_seconds"] == 0.5
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as quota:
        sdk(server, key, retries=2).audio.transcriptions.create(model="whisper-1", file=("a.wav", short_wav))
    assert quota.value.code == "insufficient_quota"
    assert quota.value.response.headers["x-should-retry"] == "false"
    assert time.monotonic() - started < 2, "the SDK retried an insufficient_quota answer"
    assert admin.key(key_id)["credits_seconds"] == 0.5


def test_a_second_concurrent_session_over_the_keys_limit_gets_429(
    server: RunningServer, admin: Admin, short_wav: bytes
) -> None:
    _, key = new_key(admin, max_sessions=1)
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        release.wait(10)
        yield b"--b--\r\n"

    def hold_session() -> None:
        httpx.post(
            f"{server.base_url}/v1/audio/transcriptions",
            content=slow_body(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=b"},
            timeout=30,
        )

    holder = threading.Thread(target=hold_session)
    holder.start()
    try:
        time.sleep(0.5)
        second = transcribe_request(server, short_wav, key)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "concurrency_limit_exceeded"
    finally:
        release.set()
        holder.join()
    wait_until(lambda: transcribe_request(server, short_wav, key).status_code == 200, 5)


def earshot_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EARSHOT_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "earshot", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_key_lifecycle_through_the_cli_reaches_the_running_server(
    backend: tuple[RunningServer, str], short_wav: bytes
) -> None:
    server, url = backend
    created = earshot_cli(
        url, "keys", "create", "--name", "cli", "--credits-seconds", "30", "--rpm", "50", "--json"
    )
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    key_id, key = body["id"], body["key"]
    PLAINTEXTS.append(key)
    assert body["credits_seconds"] == 30 and body["rpm"] == 50 and body["state"] == "active"

    assert transcribe_request(server, short_wav, key).status_code == 200
    listed = json.loads(earshot_cli(url, "keys", "list", "--json").stdout)
    mine = next(item for item in listed if item["id"] == key_id)
    assert mine["credits_seconds"] == 28.5
    assert key not in json.dumps(listed) and "secret" not in json.dumps(listed)

    updated = earshot_cli(url, "keys", "update", key_id, "--models", "pocketsphinx", "--unlimited", "--json")
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)[0]["models"] == ["pocketsphinx"]
    assert json.loads(updated.stdout)[0]["credits_seconds"] is None

    revoked = earshot_cli(url, "keys", "revoke", key_id, "--json")
    assert revoked.returncode == 0 and json.loads(revoked.stdout)[0]["state"] == "revoked"
    # Another process revoked it: the server must stop accepting it within a second.
    elapsed = wait_until(lambda: transcribe_request(server, short_wav, key).status_code == 401, 1.5)
    assert elapsed < 1.0

    unknown = earshot_cli(url, "keys", "revoke", "nosuchkey")
    assert unknown.returncode == 1 and "no key" in unknown.stderr


def test_the_admin_api_needs_the_admin_token(server: RunningServer, admin: Admin) -> None:
    assert httpx.get(f"{server.base_url}/admin/keys").status_code == 401
    wrong = httpx.get(f"{server.base_url}/admin/keys", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_admin_token"
    key_id, key = new_key(admin)
    as_key = httpx.get(f"{server.base_url}/admin/keys", headers={"Authorization": f"Bearer {key}"})
    assert as_key.status_code == 401
    listed = admin.http.get("/admin/keys").json()["data"]
    assert key_id in [item["id"] for item in listed]
    assert all("secret_hash" not in item and "key" not in item for item in listed)
    patched = admin.http.patch(f"/admin/keys/{key_id}", json={"rpm": 7, "name": "renamed"}).json()
    assert patched["rpm"] == 7 and patched["name"] == "renamed"
    bad = admin.http.post("/admin/keys", json={"name": "x", "credits_seconds": -1})
    assert bad.status_code == 400
    assert admin.http.get("/admin/keys/nosuchkey").status_code == 404


def test_usage_is_scoped_to_the_caller_and_groups_by_model_day_and_key(
    server: RunningServer, admin: Admin, short_wav: bytes
) -> None:
    first_id, first = new_key(admin)
    second_id, second = new_key(admin)
    for key in (first, first, second):
        assert transcribe_request(server, short_wav, key).status_code == 200
    own = httpx.get(
        f"{server.base_url}/v1/usage",
        params={"group_by": "key"},
        headers={"Authorization": f"Bearer {first}"},
    ).json()
    assert own["data"] == [
        {
            "key": first_id,
            "requests": 2,
            "audio_seconds": 3.0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "quantity": 3.0,
            "cost": 0.0,
        }
    ]
    everyone = admin.http.get("/v1/usage", params={"group_by": "key"}).json()["data"]
    by_key = {row["key"]: row["requests"] for row in everyone}
    assert by_key[first_id] == 2 and by_key[second_id] == 1
    today = datetime.now(UTC).date().isoformat()
    days = admin.http.get("/v1/usage", params={"group_by": "day", "start": today}).json()["data"]
    assert [row["day"] for row in days] == [today]
    future = admin.http.get("/v1/usage", params={"start": "2999-01-01", "end": "2999-01-02"}).json()
    assert future["data"] == [] and future["total"]["requests"] == 0
    assert admin.http.get("/v1/usage", params={"start": "yesterday"}).status_code == 400


def test_dials_change_at_run_time_through_the_api_and_the_cli(
    backend: tuple[RunningServer, str], admin: Admin, short_wav: bytes
) -> None:
    server, url = backend
    _, key = new_key(admin)
    changed = admin.http.put("/admin/settings", json={"max_upload_bytes": 1000})
    assert changed.status_code == 200 and changed.json()["max_upload_bytes"] == 1000
    try:
        too_big = transcribe_request(server, short_wav, key)
        assert too_big.status_code == 413
        assert admin.http.put("/admin/settings", json={"max_upload_bytes": -5}).status_code == 400
        assert admin.http.put("/admin/settings", json={"no_such_dial": 1}).status_code == 400
    finally:
        restored = earshot_cli(url, "settings", "set", "max_upload_bytes", "26214400")
        assert restored.returncode == 0, restored.stderr
    wait_until(lambda: admin.http.get("/admin/settings").json()["max_upload_bytes"] == 26214400, 1.0)
    assert transcribe_request(server, short_wav, key).status_code == 200
    bad = earshot_cli(url, "settings", "set", "keepalive_s", "soon")
    assert bad.returncode == 2 and "keepalive_s" in bad.stderr

    assert admin.http.put("/admin/settings", json={"default_rpm": 1}).status_code == 200
    reset = admin.http.delete("/admin/settings/default_rpm")
    assert reset.status_code == 200 and reset.json()["default_rpm"] == 0
    assert admin.http.delete("/admin/settings/no_such_dial").status_code == 404
    assert earshot_cli(url, "settings", "reset", "max_upload_bytes").returncode == 0
    assert transcribe_request(server, short_wav, key).status_code == 200


def test_the_per_ip_limit_applies_across_keys(server: RunningServer, admin: Admin, short_wav: bytes) -> None:
    _, first = new_key(admin)
    _, second = new_key(admin)
    assert admin.http.put("/admin/settings", json={"ip_rpm": 1}).status_code == 200
    try:
        wait_until(lambda: admin.http.get("/admin/settings").json()["ip_rpm"] == 1, 1.0)
        assert transcribe_request(server, short_wav, first).status_code == 200
        limited = transcribe_request(server, short_wav, second)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(limited.headers["retry-after"]) >= 1
    finally:
        assert admin.http.put("/admin/settings", json={"ip_rpm": 0}).status_code == 200
    assert transcribe_request(server, short_wav, second).status_code == 200


def test_metrics_count_requests_by_route_and_audio_by_model(
    server: RunningServer, admin: Admin, short_wav: bytes
) -> None:
    _, key = new_key(admin)
    assert transcribe_request(server, short_wav, key).status_code == 200
    text = httpx.get(f"{server.base_url}/metrics").text
    assert 'earshot_requests_total{route="/v1/audio/transcriptions",status="200"}' in text
    assert 'earshot_audio_seconds_total{model="whisper-tiny.en"}' in text
    assert "earshot_engine_latency_seconds_bucket" in text
    assert "earshot_active_sessions 0.0" in text


def test_no_key_or_secret_is_ever_logged(server: RunningServer) -> None:
    """Runs last in this module: every key created above must be absent from the server's log."""
    log = server.log_text()
    assert PLAINTEXTS, "the tests above should have created keys"
    for plaintext in PLAINTEXTS:
        secret = plaintext.rsplit("_", 1)[1]
        assert plaintext not in log and secret not in log
    assert ADMIN_TOKEN not in log
    assert " INFO " in log


def store_dial_directly(database_url: str, name: str, value: object) -> None:
    """Write a dial row as an older release or a hand edit might have, past the API's checks."""

    async def write() -> None:
        db = Database(database_url)
        try:
            await DialRepository(db).set({name: value}, datetime.now(UTC))
        finally:
            await db.dispose()

    asyncio.run(write())


def test_every_dial_is_bounded_and_one_bad_stored_value_spares_the_others(
    backend: tuple[RunningServer, str], admin: Admin
) -> None:
    _, url = backend
    for name, value in [
        ("max_upload_bytes", 1e30),
        ("default_rpm", 10**12),
        ("keepalive_s", 1e300),
        ("max_session_s", "NaN"),
        ("credits_low_seconds", -1),
    ]:
        refused = admin.http.put("/admin/settings", json={name: value})
        assert refused.status_code == 400, (name, refused.text)
        assert refused.json()["error"]["message"].startswith(f"invalid {name}")
    store_dial_directly(url, "max_upload_bytes", 10**30)
    try:
        assert admin.http.put("/admin/settings", json={"default_rpm": 3}).status_code == 200
        wait_until(lambda: admin.http.get("/admin/settings").json()["default_rpm"] == 3, 2.0)
        time.sleep(1.0)  # several refreshes later, the bad row still leaves the good one standing
        shown = admin.http.get("/admin/settings").json()
        assert shown["default_rpm"] == 3 and shown["max_upload_bytes"] == 25 * 1024 * 1024
    finally:
        admin.http.delete("/admin/settings/default_rpm")
        admin.http.delete("/admin/settings/max_upload_bytes")


def test_key_fields_and_usage_queries_out_of_range_get_400_not_500(
    server: RunningServer, admin: Admin
) -> None:
    for fields in [
        {"credits_seconds": 1e308},
        {"rpm": 10**30},
        {"max_sessions": 10**12},
        {"models": ["x" * 10_000]},
    ]:
        created = admin.http.post("/admin/keys", json={"name": "bounded", **fields})
        assert created.status_code == 400, (fields, created.text)
    key_id, _ = new_key(admin)
    assert admin.http.patch(f"/admin/keys/{key_id}", json={"rpm": 2**40}).status_code == 400
    for params in [
        {"start": "1e20"},
        {"start": "99999999999999999999"},
        {"end": "0001-01-01"},
        {"start": "x"},
    ]:
        answered = admin.http.get("/v1/usage", params=params)
        assert answered.status_code == 400, (params, answered.text)
        assert answered.json()["error"]["code"] == "invalid_value"


def test_the_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        mode = (tmp_path / "earshot.db").stat().st_mode & 0o777
    finally:
        stop_server(server)
    assert mode == 0o600, oct(mode)
