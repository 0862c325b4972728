"""Soak benchmark: live sessions at twice a model's capacity for minutes, ending every way a session can end.

Run as `.venv/bin/python bench/soak.py [--minutes 10] [--model whisper-tiny.en] [--load 2.0] [--seed 0]
[--restarts 1] [--server-logs DIR]`.

One `earshot serve` (default catalog, SQLite, an admin token, a 3 s idle timeout) is read for the model's live
capacity (`/metrics`); then `--load` times that many clients each run sessions back to back on /v1/realtime
(and Deepgram's /v1/listen for the idle ending: a Realtime session has no idle timeout), streaming a loop of
real English speech (../shared/audio) at real-time pace. Each session has its own key and picks how it ends at
random:

  close     the client closes with 1000 after 3-12 s                      outcome ok
  drop      the client's TCP connection is cut after 3-12 s               outcome client_closed
  revoke    the key is revoked through the admin API after 3-12 s         outcome revoked
  pause     the client talks, is quiet for twice the idle timeout, talks
            again and closes (a quiet Realtime session is kept open)      outcome ok
  idle      on Deepgram's /v1/listen: the client stops sending after
            2-6 s and waits for the idle timeout (NET-0001)               outcome timeout
  credit    the key has 4 s of credit and the client keeps talking        outcome insufficient_credits

and `--restarts` times during the run the server is stopped with SIGTERM and started again on the same
database (sessions in flight end with outcome shutdown; clients reconnect after the retry hint).

At the end every session's record is read from the database and checked against what the client sent: lost (no
record), doubled (more than one), under-billed (billed less than the audio the server acknowledged, less one
100 ms chunk), and the outcome. It prints markdown tables: the records, the server's and workers' RSS sampled
through the run, the lag of admitted sessions (a turn's `completed` after the chunk that ended it was sent;
p50/p99) and the refusals. It never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import soxr
import websockets
from realtime_load import load_loop
from serving import earshot_server, engine_workers, ignoring_interrupts, stop

from earshot.audio.pcm import ENGINE_RATE_HZ, float_to_pcm16

ADMIN_TOKEN = "soak-admin-token"
CHUNK_MS = 100
ENDINGS = ("close", "drop", "revoke", "pause", "idle", "credit")
EXPECTED_OUTCOME = {
    "close": "ok",
    "drop": "client_closed",
    "revoke": "revoked",
    "pause": "ok",
    "idle": "timeout",
    "credit": "insufficient_credits",
}
IDLE_TIMEOUT_S = 3.0
PAUSE_S = 2 * IDLE_TIMEOUT_S
CREDIT_S = 4
RSS_SAMPLE_S = 15.0


@dataclass
class Session:
    """One client session as the client saw it."""

    key_id: str
    ending: str
    sent_ms: int = 0
    refused: bool = False
    shut_down: bool = False
    lags_s: list[float] = field(default_factory=list)


@dataclass
class Soak:
    """Shared state of a run."""

    base_url: str
    model: str
    deadline: float
    rng: random.Random
    payloads: list[str]
    sessions: list[Session] = field(default_factory=list)
    refusals: int = 0
    restarting: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ws_url(self) -> str:
        return (
            self.base_url.replace("http://", "ws://")
            + f"/v1/realtime?intent=transcription&model={self.model}"
        )

    @property
    def listen_url(self) -> str:
        """Deepgram's live endpoint, which (unlike Realtime) closes a stream that sends nothing."""
        query = f"model={self.model}&encoding=linear16&sample_rate=24000&channels=1"
        return self.base_url.replace("http://", "ws://") + f"/v1/listen?{query}"


def payloads_of_loop() -> list[str]:
    loop = load_loop(CHUNK_MS)
    pcm = float_to_pcm16(
        np.asarray(soxr.resample(loop.audio.samples, ENGINE_RATE_HZ, 24_000), dtype=np.float32)
    )
    step = 48_000 * CHUNK_MS // 1000
    return [base64.b64encode(pcm[i : i + step]).decode() for i in range(0, len(pcm) - step + 1, step)]


async def admin(client: httpx.AsyncClient, method: str, path: str, **kwargs: object) -> httpx.Response:
    return await client.request(method, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kwargs)


async def run_client(soak: Soak, http: httpx.AsyncClient) -> None:
    """Sessions back to back until the deadline."""
    while time.monotonic() < soak.deadline and not soak.restarting.is_set():
        ending = soak.rng.choice(ENDINGS)
        fields: dict[str, object] = {"name": f"soak-{ending}"}
        if ending == "credit":
            fields["credits_seconds"] = CREDIT_S
        try:
            created = (await admin(http, "POST", "/admin/keys", json=fields)).json()
        except (httpx.HTTPError, ValueError):
            await asyncio.sleep(1.0)  # the server is restarting
            continue
        session = Session(created["id"], ending)
        soak.sessions.append(session)
        retry_after_s = await run_session(soak, http, session, created["key"])
        if retry_after_s:
            await asyncio.sleep(retry_after_s)


async def run_session(soak: Soak, http: httpx.AsyncClient, session: Session, key: str) -> float:
    """One session; the seconds to wait before the next when it was refused."""
    deepgram = session.ending == "idle"
    url, scheme = (soak.listen_url, "Token") if deepgram else (soak.ws_url, "Bearer")
    try:
        ws = await websockets.connect(url, additional_headers={"Authorization": f"{scheme} {key}"})
    except websockets.InvalidStatus as e:  # Deepgram refuses at the handshake
        session.refused = True
        soak.refusals += 1
        return float(e.response.headers.get("Retry-After") or 1)
    except (OSError, websockets.WebSocketException):
        session.refused = True
        return 1.0
    first = None if deepgram else json.loads(await ws.recv())  # Deepgram sends nothing on open
    if first is not None and first["type"] == "error":
        session.refused = True
        soak.refusals += 1
        match = re.search(r"try again in (\d+)", first["error"]["message"])
        await ws.close()
        return float(match.group(1)) if match else 1.0
    talk_s = soak.rng.uniform(2, 6) if session.ending == "idle" else soak.rng.uniform(3, 12)
    if session.ending == "credit":
        talk_s = CREDIT_S + 4
    turn_sent_at: list[float] = []

    async def read() -> None:
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "input_audio_buffer.speech_stopped":
                turn_sent_at.append(time.monotonic())
            elif event["type"] == "conversation.item.input_audio_transcription.completed" and turn_sent_at:
                session.lags_s.append(time.monotonic() - turn_sent_at.pop(0))
            elif shutting_down(event):
                session.shut_down = True

    reader = asyncio.create_task(read())
    started = time.monotonic()
    offset = soak.rng.randrange(len(soak.payloads))
    quiet_s = 0.0  # how long a pausing client was quiet
    try:
        index = 0
        while time.monotonic() - started - quiet_s < talk_s:
            if session.ending == "pause" and not quiet_s and index * CHUNK_MS / 1000 >= talk_s / 2:
                quiet_from = time.monotonic()
                await asyncio.sleep(PAUSE_S)  # not even a keepalive
                quiet_s = time.monotonic() - quiet_from
            payload = soak.payloads[(offset + index) % len(soak.payloads)]
            if deepgram:
                await ws.send(base64.b64decode(payload))
            else:
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
            session.sent_ms += CHUNK_MS
            index += 1
            await asyncio.sleep(max(0.0, started + quiet_s + index * CHUNK_MS / 1000 - time.monotonic()))
        if session.ending in ("close", "pause"):
            await ws.close()
        elif session.ending == "drop":
            ws.transport.abort()
        elif session.ending == "revoke":
            await admin(http, "POST", f"/admin/keys/{session.key_id}/revoke")
        with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
            await asyncio.wait_for(reader, IDLE_TIMEOUT_S + 10)
    except websockets.ConnectionClosed:
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await reader
        ws.transport.abort()
    return 0.0


def shutting_down(event: dict[str, object]) -> bool:
    """A Realtime `error` or a Deepgram `Error` saying the server is shutting down."""
    if event["type"] == "error":
        details = event["error"]
        return isinstance(details, dict) and details.get("code") == "server_shutting_down"
    return event["type"] == "Error" and "shutting down" in str(event.get("description", ""))


def read_records(db_path: Path) -> dict[str, list[tuple[int, str | None]]]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT key_id, audio_ms, outcome FROM usage_records").fetchall()
    records: dict[str, list[tuple[int, str | None]]] = {}
    for key_id, audio_ms, outcome in rows:
        records.setdefault(key_id, []).append((audio_ms, outcome))
    return records


def rss_mb(server: psutil.Process) -> tuple[float, float]:
    with contextlib.suppress(psutil.NoSuchProcess):
        workers = engine_workers(server)
        return server.memory_info().rss / 2**20, sum(w.memory_info().rss for w in workers) / 2**20
    return 0.0, 0.0


async def capacity_of(base_url: str, model: str) -> int:
    text = (await asyncio.to_thread(httpx.get, f"{base_url}/metrics")).text
    match = re.search(rf'earshot_model_live_capacity{{model="{re.escape(model)}"}} (\S+)', text)
    if match is None or float(match.group(1)) < 1:
        sys.exit(f"soak: {model} has no bounded live capacity on this server")
    return int(float(match.group(1)))


async def wait_ready(base_url: str) -> None:
    for _ in range(600):
        with contextlib.suppress(httpx.HTTPError):
            if (await asyncio.to_thread(httpx.get, f"{base_url}/readyz", timeout=1)).status_code == 200:
                return
        await asyncio.sleep(0.1)
    sys.exit("soak: the server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--load", type=float, default=2.0, help="clients as a multiple of the live capacity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--server-logs", type=Path, default=None)
    args = parser.parse_args()
    payloads = payloads_of_loop()
    with tempfile.TemporaryDirectory(prefix="earshot-soak-") as tmp:
        db_path = Path(tmp) / "earshot.db"
        env = {
            "EARSHOT_DATABASE_URL": f"sqlite+aiosqlite:///{db_path}",
            "EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN,
            "EARSHOT_KEEPALIVE_S": str(IDLE_TIMEOUT_S),
        }
        logs = args.server_logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        samples: list[tuple[float, float, float]] = []
        soak_started = time.monotonic()
        restarts_at = sorted(
            random.Random(args.seed + 1).uniform(0.3, 0.8) * args.minutes * 60 for _ in range(args.restarts)
        )
        soak: Soak | None = None
        capacity = 0
        generation = 0
        while True:
            generation += 1
            with (
                (logs / f"server-{generation}.log").open("wb") as log,
                earshot_server(env, log) as (url, proc),
            ):
                asyncio.run(wait_ready(url))
                if soak is None:
                    capacity = asyncio.run(capacity_of(url, args.model))
                    soak = Soak(
                        url,
                        args.model,
                        soak_started + args.minutes * 60,
                        random.Random(args.seed),
                        payloads,
                    )
                    print(
                        f"soak: {args.model} holds {capacity} live sessions; {args.load:g}x load", flush=True
                    )
                soak.base_url = url
                restart_at = soak_started + restarts_at.pop(0) if restarts_at else None
                try:
                    asyncio.run(
                        run_generation(
                            soak,
                            round(capacity * args.load),
                            psutil.Process(proc.pid),
                            samples,
                            soak_started,
                            restart_at,
                        )
                    )
                finally:
                    with ignoring_interrupts():
                        stop(proc)
            if restart_at is None or time.monotonic() >= soak.deadline:
                break
        assert soak is not None
        report(soak, read_records(db_path), samples, capacity, args)


async def run_generation(
    soak: Soak,
    clients: int,
    server: psutil.Process,
    samples: list[tuple[float, float, float]],
    soak_started: float,
    restart_at: float | None,
) -> None:
    """Clients against one server process until the deadline, or until it is time to restart it."""
    soak.restarting.clear()
    end_at = min(soak.deadline, restart_at) if restart_at is not None else soak.deadline
    async with httpx.AsyncClient(base_url=soak.base_url, timeout=30) as http:
        tasks = [asyncio.create_task(run_client(soak, http)) for _ in range(clients)]
        while time.monotonic() < end_at:
            samples.append((time.monotonic() - soak_started, *rss_mb(server)))
            await asyncio.sleep(min(RSS_SAMPLE_S, max(0.1, end_at - time.monotonic())))
        if restart_at is not None and time.monotonic() < soak.deadline:
            soak.restarting.set()
            server.terminate()  # SIGTERM: the server drains its sessions while the clients are still talking
        else:
            soak.deadline = time.monotonic()
        await asyncio.gather(*tasks, return_exceptions=True)


def report(
    soak: Soak,
    records: dict[str, list[tuple[int, str | None]]],
    samples: list[tuple[float, float, float]],
    capacity: int,
    args: argparse.Namespace,
) -> None:
    admitted = [session for session in soak.sessions if not session.refused]
    lost = [s for s in admitted if not records.get(s.key_id)]
    doubled = [s for s in admitted if len(records.get(s.key_id, [])) > 1]
    under = [
        s
        for s in admitted
        if len(records.get(s.key_id, [])) == 1
        and records[s.key_id][0][0] < min_billed_ms(s, records[s.key_id][0][1])
    ]
    print(f"\n## Soak: {args.minutes:g} min, {args.model}, capacity {capacity}, {args.load:g}x load\n")
    print("| sessions | admitted | refused | lost | doubled | under-billed |")
    print("|---:|---:|---:|---:|---:|---:|")
    counts = (len(soak.sessions), len(admitted), soak.refusals, len(lost), len(doubled), len(under))
    print("| " + " | ".join(str(count) for count in counts) + " |")
    print("\n| ending | sessions | outcome as expected | shut down by a restart | other outcomes |")
    print("|---|---:|---:|---:|---|")
    for ending in ENDINGS:
        mine = [s for s in admitted if s.ending == ending and len(records.get(s.key_id, [])) == 1]
        outcomes = [records[s.key_id][0][1] for s in mine]
        expected = sum(outcome == EXPECTED_OUTCOME[ending] for outcome in outcomes)
        shutdown = sum(outcome == "shutdown" for outcome in outcomes)
        others = sorted({str(o) for o in outcomes if o not in (EXPECTED_OUTCOME[ending], "shutdown")})
        print(f"| {ending} | {len(mine)} | {expected} | {shutdown} | {', '.join(others) or '-'} |")
    for label, sessions in (("under-billed", under), ("lost", lost)):
        for s in sessions[:5]:
            print(f"  {label}: {s.ending} sent {s.sent_ms} ms, record {records.get(s.key_id)}")
    lags = sorted(lag for s in admitted for lag in s.lags_s)
    if lags:
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        print("\n| turns completed | p50 lag | p99 lag | max lag |")
        print("|---:|---:|---:|---:|")
        print(f"| {len(lags)} | {statistics.median(lags):.2f} s | {p99:.2f} s | {lags[-1]:.2f} s |")
    print("\n| minute | server RSS MB | workers RSS MB |")
    print("|---:|---:|---:|")
    for at_s, server_mb, workers_mb in samples:
        print(f"| {at_s / 60:.1f} | {server_mb:.0f} | {workers_mb:.0f} |")
    steady = [sample for sample in samples if sample[0] > 60]
    if len(steady) >= 2:
        print("\n| process | level (each minute's lowest) | level within | every sample | peak over level |")
        print("|---|---:|---:|---:|---:|")
        for name, column in (("server", 1), ("workers", 2)):
            levels = minute_levels(steady, column)
            median = statistics.median(levels)
            deviation = max(abs(level - median) for level in levels) / median * 100
            values = [sample[column] for sample in steady]
            print(
                f"| {name} | {min(levels):.0f}-{max(levels):.0f} MB | ±{deviation:.1f} % of {median:.0f} MB "
                f"| {min(values):.0f}-{max(values):.0f} MB | {(max(values) / median - 1) * 100:.1f} % |"
            )


def minute_levels(samples: list[tuple[float, float, float]], column: int) -> list[float]:
    """Each minute's lowest RSS sample: the level between decodes.

    A sample taken mid-decode also holds that decode's working set (Whisper's attention buffers), which is
    freed when it ends; a leak shows as a level that climbs from minute to minute.
    """
    by_minute: dict[int, float] = {}
    for at_s, *values in samples:
        minute = int(at_s // 60)
        by_minute[minute] = min(by_minute.get(minute, values[column - 1]), values[column - 1])
    return [by_minute[minute] for minute in sorted(by_minute)]


def min_billed_ms(session: Session, outcome: str | None) -> int:
    """The least a record must bill: what the client sent, less what may still have been in flight.

    A session the server ended (revoked, shut down, out of credit) stops being read while its goodbye is on
    the way, and the client goes on sending until it hears it: that audio was sent but never received.
    """
    if session.ending == "credit":
        return 0
    if session.ending in ("drop", "revoke") or session.shut_down or outcome == "shutdown":
        return 0 if outcome == "shutdown" else session.sent_ms - 10 * CHUNK_MS
    return session.sent_ms - CHUNK_MS


if __name__ == "__main__":
    main()
