"""POST /v1/transcripts through a real server: a growing document over SSE, the store, the cache, failures.

One server per module, with keys, routed to earshot's own pocketsphinx (`local`), a fake WhisperLiveKit
(`wlk`, streaming-only) and a fake OpenAI behind a gate of one (`slow`, its replies delayed per test), and
keepalives dialed down so that a slow engine shows them within a test.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from earshot.api.transcripts.documents import transcript_id
from earshot.audio.decode import decode_audio
from earshot.audio.pcm import Audio
from earshot.engines.provider_io import wav_bytes
from earshot.store.records import UsageRecord
from tests.conftest import (
    ADMIN_TOKEN,
    Admin,
    RunningServer,
    shared_audio,
    sqlite_url,
    start_server,
    stop_server,
    usage_records,
    wait_until,
)
from tests.e2e.catalogs import FAKE_KEY_ENV, openai_model, tone_wav, write_catalog
from tests.fakes.openai import OPENAI_KEY, FakeOpenAI
from tests.fakes.server import serving
from tests.fakes.whisperlivekit import WhisperLiveKitFake

SENTENCES = [
    "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
    "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0920.wav",
]
SLOW_TEXT = "words from the slow provider"
KEEPALIVE_S = 0.3
Event = tuple[str, Any]


@dataclass
class Setup:
    server: RunningServer
    database_url: str
    wlk: WhisperLiveKitFake
    slow: FakeOpenAI
    key_a: tuple[str, str]
    key_b: tuple[str, str]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp: Path = tmp_path_factory.mktemp("transcripts")
    wlk = WhisperLiveKitFake(script="one two three four five six seven eight nine ten", seconds_per_word=0.3)
    slow = FakeOpenAI(SLOW_TEXT)
    with serving(wlk.app) as wlk_server, serving(slow.app) as slow_server:
        catalog = write_catalog(
            tmp / "catalog.yaml",
            {
                "local": {"engine": "pocketsphinx"},
                "wlk": {"engine": "whisperlivekit", "base_url": wlk_server.base_url},
                "slow": openai_model(f"{slow_server.base_url}/v1", max_concurrency=1, max_queue=4),
            },
            default_model="local",
        )
        env = {
            "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
            "EARSHOT_CONFIG": str(catalog),
            FAKE_KEY_ENV: OPENAI_KEY,
            "EARSHOT_SSE_KEEPALIVE_S": str(KEEPALIVE_S),
        }
        server = start_server(tmp, env)
        try:
            admin = Admin(server)
            yield Setup(server, sqlite_url(tmp), wlk, slow, admin.create_key(), admin.create_key())
        finally:
            stop_server(server)


@pytest.fixture
def fakes(setup: Setup) -> Iterator[Setup]:
    """The module's setup with both fakes free of faults before and after the test."""
    for fake in (setup.wlk, setup.slow):
        fake.faults.reset()
    yield setup
    for fake in (setup.wlk, setup.slow):
        fake.faults.reset()


@pytest.fixture(scope="module")
def long_wav() -> bytes:
    """About 21 s of read speech: three sentences with a second of silence after each."""
    parts = [decode_audio(shared_audio(relpath).read_bytes()).samples for relpath in SENTENCES]
    gap = np.zeros(16_000, np.float32)
    return wav_bytes(Audio(np.concatenate([piece for part in parts for piece in (part, gap)])))


def auth(key: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key[1]}"}


def read_events(response: httpx.Response) -> Iterator[Event]:
    """(event name, JSON data) per SSE event and ("comment", text) per comment line, as they arrive."""
    name: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and name is not None:
            yield name, json.loads("\n".join(data))
            name, data = None, []


def upload(
    server: RunningServer,
    wav: bytes,
    key: tuple[str, str] | None,
    path: str = "/v1/transcripts",
    **fields: str,
) -> list[Event]:
    """Every event of a streamed upload (asked for with Accept: text/event-stream)."""
    headers = {"Accept": "text/event-stream", **(auth(key) if key else {})}
    with httpx.stream(
        "POST",
        f"{server.base_url}{path}",
        files={"file": ("talk.wav", wav, "audio/wav")},
        data=fields,
        headers=headers,
        timeout=60,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(read_events(response))


def named(events: list[Event]) -> list[str]:
    """The event names, keepalive comments left out."""
    return [name for name, _ in events if name != "comment"]


def of(events: list[Event], name: str) -> list[Any]:
    return [data for event, data in events if event == name]


def text_of(paragraphs: list[dict[str, Any]]) -> str:
    return " ".join(paragraph["text"] for paragraph in paragraphs)


def records_of(setup: Setup, key: tuple[str, str]) -> list[UsageRecord]:
    return [r for r in usage_records(setup.database_url) if r.key_id == key[0] and r.route == "transcripts"]


def get(setup: Setup, path: str, key: tuple[str, str], **params: str) -> httpx.Response:
    return httpx.get(f"{setup.server.base_url}{path}", params=params, headers=auth(key), timeout=30)


def test_a_long_clip_grows_to_the_stored_document_and_a_second_upload_is_answered_from_the_cache(
    fakes: Setup, long_wav: bytes
) -> None:
    before = len(records_of(fakes, fakes.key_a))
    events = upload(fakes.server, long_wav, fakes.key_a, model="local")
    assert named(events)[-1] == "done" and set(named(events)[:-1]) == {"transcription"}
    snapshots = of(events, "transcription")
    texts = [text_of(snapshot["paragraphs"]) for snapshot in snapshots]
    assert len({text for text in texts if text}) >= 2, "the text should arrive in more than one piece"
    for earlier, later in itertools.pairwise(texts):
        assert later.startswith(earlier)
    times = [snapshot["current_time"] for snapshot in snapshots]
    assert times == sorted(times) and times[-1] == snapshots[-1]["total_time"]
    assert snapshots[-1]["total_time"] == pytest.approx(len(long_wav[44:]) / 32_000, abs=0.01)
    done = of(events, "done")[0]
    assert done["cached"] is False and done["paragraphs"] == snapshots[-1]["paragraphs"]
    assert {snapshot["document_id"] for snapshot in snapshots} == {done["id"]}
    assert "dashwood" in text_of(done["paragraphs"]) or "respectable" in text_of(done["paragraphs"])
    stored = get(fakes, f"/v1/transcripts/{done['id']}", fakes.key_a)
    assert stored.status_code == 200 and stored.json() == done
    assert done["name"] == "talk.wav" and done["model"] == "local" and done["validated"] is None

    again = upload(fakes.server, long_wav, fakes.key_a, model="local")
    assert named(again) == ["done"]
    cached = of(again, "done")[0]
    assert cached["cached"] is True and {**cached, "cached": False} == done
    records = records_of(fakes, fakes.key_a)[before:]
    assert [(r.outcome, r.audio_ms) for r in records] == [("ok", round(done["duration"] * 1000)), ("ok", 0)]


def test_another_keys_document_is_not_found_and_never_its_cache(fakes: Setup, long_wav: bytes) -> None:
    wav = tone_wav(1.0)
    mine = of(upload(fakes.server, wav, fakes.key_a, model="slow"), "done")[0]
    for method in ("GET", "PATCH", "DELETE"):
        response = httpx.request(
            method,
            f"{fakes.server.base_url}/v1/transcripts/{mine['id']}",
            headers=auth(fakes.key_b),
            json={"validated": None} if method == "PATCH" else None,
        )
        assert response.status_code == 404, method
        assert response.json()["error"]["code"] == "transcript_not_found"
    listed = get(fakes, "/v1/transcripts", fakes.key_b).json()["data"]
    assert mine["id"] not in [document["id"] for document in listed]
    theirs = upload(fakes.server, wav, fakes.key_b, model="slow")
    assert "transcription" in named(theirs)
    their_document = of(theirs, "done")[0]
    assert their_document["cached"] is False and their_document["id"] != mine["id"]
    assert their_document["id"] == transcript_id(fakes.key_b[0], wav, "slow", None)
    assert get(fakes, f"/v1/transcripts/{mine['id']}", fakes.key_a).status_code == 200


def test_a_provider_that_drops_midway_ends_the_stream_with_an_error_and_nothing_is_stored(
    fakes: Setup,
) -> None:
    fakes.wlk.faults.close_1011_after_s = 2.0
    wav = tone_wav(4.0)
    before = len(records_of(fakes, fakes.key_a))
    events = upload(fakes.server, wav, fakes.key_a, model="wlk")
    assert named(events)[-1] == "error" and "done" not in named(events)
    # The server had committed some words before it dropped: they were shown as they came.
    assert any(text_of(snapshot["paragraphs"]) for snapshot in of(events, "transcription"))
    error = of(events, "error")[0]
    assert error["code"] == "UPSTREAM_SERVICE_ERROR" and "fake: internal error" not in error["detail"]
    document_id = transcript_id(fakes.key_a[0], wav, "wlk", None)
    assert get(fakes, f"/v1/transcripts/{document_id}", fakes.key_a).status_code == 404
    assert [r.outcome for r in records_of(fakes, fakes.key_a)[before:]] == ["upstream_error"]


def test_a_provider_that_refuses_the_connection_is_an_error_event_too(fakes: Setup) -> None:
    fakes.wlk.faults.fail_next(503)
    wav = tone_wav(1.5)
    before = len(records_of(fakes, fakes.key_a))
    events = upload(fakes.server, wav, fakes.key_a, model="wlk")
    # The call took its slot (an empty snapshot), then the connection was refused.
    assert named(events) == ["transcription", "error"] and of(events, "transcription")[0]["paragraphs"] == []
    assert of(events, "error")[0]["code"] == "UPSTREAM_SERVICE_ERROR"
    document_id = transcript_id(fakes.key_a[0], wav, "wlk", None)
    assert get(fakes, f"/v1/transcripts/{document_id}", fakes.key_a).status_code == 404
    assert [r.outcome for r in records_of(fakes, fakes.key_a)[before:]] == ["upstream_error"]


def test_a_streaming_only_upstream_is_paced_and_its_text_grows_as_it_commits(fakes: Setup) -> None:
    events = upload(fakes.server, tone_wav(3.5), fakes.key_a, model="wlk", use_cache="false")
    texts = [text_of(snapshot["paragraphs"]) for snapshot in of(events, "transcription")]
    assert len(set(texts)) >= 3
    assert text_of(of(events, "done")[0]["paragraphs"]) == "one two three four five six seven eight nine ten"
    log = fakes.wlk.connections[-1]
    assert log.finished and not log.overflowed


def test_keepalives_arrive_while_a_slow_engine_works(fakes: Setup) -> None:
    fakes.slow.faults.delay_s = 1.5
    events = upload(fakes.server, tone_wav(1.2), fakes.key_a, model="slow", use_cache="false")
    keepalives_before_text = 0
    for name, data in events:
        if name == "transcription" and data["paragraphs"]:
            break
        keepalives_before_text += name == "comment" and data == "keepalive"
    assert keepalives_before_text >= 2
    # The engine call started at once (an empty snapshot with the audio's length), then went quiet.
    first = of(events, "transcription")[0]
    assert first["paragraphs"] == [] and first["total_time"] == 1.2
    assert text_of(of(events, "done")[0]["paragraphs"]) == SLOW_TEXT


def test_a_full_model_tells_a_waiting_upload_its_queue_position(fakes: Setup) -> None:
    fakes.slow.faults.delay_s = 2.0
    seen_requests = len(fakes.slow.requests)
    first: list[Event] = []
    holder = threading.Thread(
        target=lambda: first.extend(
            upload(fakes.server, tone_wav(1.0), fakes.key_a, model="slow", use_cache="0")
        )
    )
    holder.start()
    # use_cache=0: this audio was stored under this key before, and is transcribed again.
    wait_until(lambda: len(fakes.slow.requests) > seen_requests, timeout_s=20)
    waiting = upload(fakes.server, tone_wav(1.5), fakes.key_b, model="slow", use_cache="0")
    holder.join()
    assert named(waiting)[0] == "queued" and of(waiting, "queued")[0] == {"position": 1}
    assert named(waiting)[-1] == "done" and "queued" not in named(first)


def test_a_client_that_leaves_midway_stops_the_work_is_billed_once_and_nothing_is_stored(
    fakes: Setup,
) -> None:
    fakes.slow.faults.delay_s = 3.0
    wav = tone_wav(1.1)
    before = len(records_of(fakes, fakes.key_a))
    with httpx.stream(
        "POST",
        f"{fakes.server.base_url}/v1/transcripts",
        files={"file": ("leaving.wav", wav, "audio/wav")},
        data={"model": "slow", "stream": "true", "use_cache": "false"},
        headers=auth(fakes.key_a),
        timeout=30,
    ) as response:
        name, snapshot = next(read_events(response))
        # The provider is working on it: leave then.
        assert name == "transcription" and snapshot["paragraphs"] == []
    wait_until(lambda: len(records_of(fakes, fakes.key_a)) > before, timeout_s=10)
    assert [r.outcome for r in records_of(fakes, fakes.key_a)[before:]] == ["client_closed"]
    # The record is written once the work has stopped, so nothing can be stored after it.
    document_id = transcript_id(fakes.key_a[0], wav, "slow", None)
    assert get(fakes, f"/v1/transcripts/{document_id}", fakes.key_a).status_code == 404


def test_a_validated_version_is_checked_saved_beside_the_machine_one_and_exported(fakes: Setup) -> None:
    document = httpx.post(
        f"{fakes.server.base_url}/v1/transcripts",
        files={"file": ("review me.wav", tone_wav(2.0), "audio/wav")},
        data={"model": "slow", "name": "review me.wav"},
        headers=auth(fakes.key_a),
        timeout=30,
    ).json()
    assert document["paragraphs"][0]["text"] == SLOW_TEXT and document["validated"] is None
    path = f"{fakes.server.base_url}/v1/transcripts/{document['id']}"

    def patch(body: Any) -> httpx.Response:
        return httpx.patch(path, content=json.dumps(body), headers=auth(fakes.key_a), timeout=30)

    refusals = {
        "validated.0.start": [{"start": -1.0, "end": 1.0, "text": "before the start"}],
        "validated.0": [{"start": 2.0, "end": 1.0, "text": "ends before it starts"}],
        "validated.0.text": [{"start": 0.0, "end": 1.0, "text": 7}],
        "validated": [{"start": 1.0, "end": 2.0, "text": "b"}, {"start": 0.0, "end": 0.5, "text": "a"}],
    }
    for param, paragraphs in refusals.items():
        refused = patch({"validated": paragraphs})
        assert refused.status_code == 400, refused.text
        assert (
            refused.json()["error"]["code"] == "invalid_value" and refused.json()["error"]["param"] == param
        )
    assert patch({"validated": "not a list"}).status_code == 400
    assert httpx.patch(path, content=b"{", headers=auth(fakes.key_a)).status_code == 400
    assert get(fakes, f"/v1/transcripts/{document['id']}", fakes.key_a).json()["validated"] is None

    reviewed = [
        {"speaker_no": 0, "start": 0.0, "end": 1.25, "text": "Words from"},
        {"speaker_no": 1, "start": 1.25, "end": 2.0, "text": "the reviewer."},
    ]
    saved = patch({"validated": reviewed})
    assert saved.status_code == 200, saved.text
    assert saved.json()["validated"][1] == {**reviewed[1], "speaker_id": "speaker-1"}
    assert saved.json()["paragraphs"] == document["paragraphs"]

    txt = get(fakes, f"/v1/transcripts/{document['id']}", fakes.key_a, format="txt")
    assert txt.text == "speaker-0: Words from\n\nspeaker-1: the reviewer.\n\n"
    assert txt.headers["content-type"].startswith("text/plain")
    assert 'filename="review_me.txt"' in txt.headers["content-disposition"]
    srt = get(fakes, f"/v1/transcripts/{document['id']}", fakes.key_a, format="srt").text
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,250\nspeaker-0: Words from\n\n2\n00:00:01,250 --> ")
    vtt = get(fakes, f"/v1/transcripts/{document['id']}", fakes.key_a, format="vtt")
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\n<v speaker-0>Words from\n\n")
    as_json = get(fakes, f"/v1/transcripts/{document['id']}", fakes.key_a, format="json").json()
    assert as_json["validated"] == saved.json()["validated"]
    assert get(fakes, f"/v1/transcripts/{document['id']}", fakes.key_a, format="docx").status_code == 400

    cleared = patch({"validated": None}).json()
    assert cleared["validated"] is None
    machine_srt = get(fakes, f"/v1/transcripts/{document['id']}", fakes.key_a, format="srt").text
    assert machine_srt == f"1\n00:00:00,000 --> 00:00:02,000\n{SLOW_TEXT}\n\n"


def test_the_list_pages_newest_first_and_delete_removes_a_document(fakes: Setup) -> None:
    ids = []
    for seconds in (1.01, 1.31, 1.61):
        response = httpx.post(
            f"{fakes.server.base_url}/v1/transcripts",
            files={"file": ("page.wav", tone_wav(seconds), "audio/wav")},
            data={"model": "slow", "stream": "false"},
            headers=auth(fakes.key_b),
            timeout=30,
        )
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        ids.append(response.json()["id"])
    first = get(fakes, "/v1/transcripts", fakes.key_b, limit="2").json()
    assert [d["id"] for d in first["data"]] == [ids[2], ids[1]] and first["has_more"] is True
    second = get(fakes, "/v1/transcripts", fakes.key_b, limit="2", after=first["last_id"]).json()
    assert second["data"][0]["id"] == ids[0]
    assert get(fakes, "/v1/transcripts", fakes.key_b, limit="0").status_code == 400
    deleted = httpx.delete(f"{fakes.server.base_url}/v1/transcripts/{ids[1]}", headers=auth(fakes.key_b))
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert get(fakes, f"/v1/transcripts/{ids[1]}", fakes.key_b).status_code == 404
    assert ids[1] not in [d["id"] for d in get(fakes, "/v1/transcripts", fakes.key_b).json()["data"]]


def test_bad_uploads_are_refused_before_any_stream_in_openai_shape(fakes: Setup) -> None:
    def post(headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(
            f"{fakes.server.base_url}/v1/transcripts",
            headers={**auth(fakes.key_a), **(headers or {})},
            timeout=30,
            **kwargs,
        )

    missing = post(files={"model": (None, "local")})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    unknown = post(files={"file": ("a.wav", tone_wav(0.5), "audio/wav")}, data={"model": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    not_audio = post(
        files={"file": ("a.wav", b"this is not audio at all", "audio/wav")}, data={"stream": "false"}
    )
    assert not_audio.status_code == 400 and not_audio.json()["error"]["code"] == "invalid_audio"
    anonymous = httpx.post(
        f"{fakes.server.base_url}/v1/transcripts", files={"file": ("a.wav", tone_wav(0.5), "audio/wav")}
    )
    assert anonymous.status_code == 401
    admin = Admin(fakes.server)
    assert admin.http.put("/admin/settings", json={"max_upload_bytes": 4096}).status_code == 200
    try:
        too_big = post(
            files={"file": ("a.wav", tone_wav(1.0), "audio/wav")}, headers={"Accept": "text/event-stream"}
        )
    finally:
        assert admin.http.delete("/admin/settings/max_upload_bytes").status_code == 200
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"


def test_audio_that_does_not_decode_is_an_invalid_audio_event_when_streamed(fakes: Setup) -> None:
    before = len(records_of(fakes, fakes.key_a))
    events = upload(fakes.server, b"RIFF and then nothing useful", fakes.key_a)
    assert named(events) == ["error"] and of(events, "error")[0]["code"] == "INVALID_AUDIO"
    assert [r.outcome for r in records_of(fakes, fakes.key_a)[before:]] == ["rejected"]


def test_the_seed_routes_answer_the_same_and_are_deprecated_in_the_schema(fakes: Setup) -> None:
    wav = tone_wav(0.9)
    streamed = upload(fakes.server, wav, fakes.key_a, path="/asr/transcribe/stream", model="slow")
    assert named(streamed)[-1] == "done" and "transcription" in named(streamed)
    plain = httpx.post(
        f"{fakes.server.base_url}/asr/transcribe",
        files={"file": ("talk.wav", wav, "audio/wav")},
        data={"model": "slow"},
        headers={"Accept": "text/event-stream", **auth(fakes.key_a)},
        timeout=30,
    )
    assert plain.status_code == 200 and plain.json()["id"] == of(streamed, "done")[0]["id"]
    assert plain.json()["cached"] is True
    paths = httpx.get(f"{fakes.server.base_url}/openapi.json").json()["paths"]
    assert paths["/asr/transcribe/stream"]["post"]["deprecated"] is True
    assert paths["/asr/transcribe"]["post"]["deprecated"] is True
    assert not paths["/v1/transcripts"]["post"].get("deprecated", False)


def test_an_anonymous_server_keeps_documents_for_its_anonymous_callers(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/transcripts",
        files={
            "file": ("go.wav", shared_audio("pocketsphinx-testdata/goforward.wav").read_bytes(), "audio/wav")
        },
        data={"model": "pocketsphinx"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    document = response.json()
    assert "forward" in text_of(document["paragraphs"])
    listed = httpx.get(f"{server.base_url}/v1/transcripts").json()["data"]
    assert document["id"] in [d["id"] for d in listed]
    assert httpx.delete(f"{server.base_url}/v1/transcripts/{document['id']}").status_code == 200


def earshot_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EARSHOT_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "earshot", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_the_cli_lists_shows_exports_and_deletes_what_the_server_stored(fakes: Setup, tmp_path: Path) -> None:
    document = of(upload(fakes.server, tone_wav(1.77), fakes.key_a, model="slow"), "done")[0]
    listed = earshot_cli(fakes.database_url, "transcripts", "list", "--key", fakes.key_a[0], "--json")
    assert listed.returncode == 0, listed.stderr
    mine = json.loads(listed.stdout)
    assert mine[0]["id"] == document["id"] and mine[0]["key_id"] == fakes.key_a[0]

    shown = earshot_cli(fakes.database_url, "transcripts", "show", document["id"])
    assert shown.returncode == 0 and shown.stdout == f"{SLOW_TEXT}\n\n"
    srt_path = tmp_path / "talk.srt"
    exported = earshot_cli(
        fakes.database_url,
        "transcripts",
        "export",
        document["id"],
        "--format",
        "srt",
        "--output",
        str(srt_path),
    )
    assert exported.returncode == 0, exported.stderr
    assert (
        srt_path.read_text()
        == get(fakes, f"/v1/transcripts/{document['id']}", fakes.key_a, format="srt").text
    )
    vtt = earshot_cli(fakes.database_url, "transcripts", "export", document["id"], "--format", "vtt")
    assert vtt.stdout == f"WEBVTT\n\n00:00:00.000 --> 00:00:01.770\n{SLOW_TEXT}\n\n"

    assert earshot_cli(fakes.database_url, "transcripts", "delete", document["id"]).returncode == 0
    assert get(fakes, f"/v1/transcripts/{document['id']}", fakes.key_a).status_code == 404
    again = earshot_cli(fakes.database_url, "transcripts", "delete", document["id"])
    assert again.returncode == 1 and "no transcript" in again.stderr
