"""What a step of the realtime bench measured: server samples, lags from the sessions' logs, held, tables."""

from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from realtime_load import INPUT_RATE_HZ, SessionLog, SpeechLoop

from earshot.audio.pcm import ENGINE_RATE_HZ, StreamResampler
from earshot.audio.vad import WINDOW_MS, VadParams

VAD = VadParams()
STOPPED_DECISION_MS = math.ceil(VAD.silence_duration_ms / WINDOW_MS) * WINDOW_MS
MAX_EVENT_LAG_MS = 50.0
# The clients are behind (their timestamps are then late too) when 5 % of sends go out this late or later.
MAX_SEND_LATE_MS = 50.0


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU seconds and RSS of the server tree and the clients, and the machine's busy CPU, at one moment."""

    at: float
    gateway_cpu_s: float
    loop_cpu_s: float  # the gateway's main thread, where its event loop runs
    engine_cpu_s: float
    client_cpu_s: float
    machine_busy_s: float
    gateway_rss: int
    engine_rss: int  # every process under the gateway
    worker_rss: tuple[int, ...] = ()  # each engine worker, in pid order


class ServerClock:
    """After which chunk the server has heard a given stretch of a session's audio (through its resampler)."""

    def __init__(self, chunk_ms: int) -> None:
        self._resampler = StreamResampler(INPUT_RATE_HZ)
        self._chunk = np.zeros(INPUT_RATE_HZ * chunk_ms // 1000, dtype=np.float32)
        self._heard: list[int] = []  # engine-rate samples out of the resampler after each chunk

    def chunk_reaching(self, audio_ms: int) -> int:
        """Index of the first chunk after which the server holds the session's first `audio_ms`."""
        sample = audio_ms * ENGINE_RATE_HZ // 1000
        while not self._heard or self._heard[-1] < sample:
            before = self._heard[-1] if self._heard else 0
            self._heard.append(before + len(self._resampler.feed(self._chunk)))
        return bisect.bisect_left(self._heard, sample)


@dataclass(slots=True)
class Step:
    """What one step of N sessions measured; mode "null" (the gateway alone) or "engine" (a speech model)."""

    mode: str
    model: str
    sessions: int
    window_s: float
    max_completed_ms: float
    t_base: float = 0.0
    started_ms: list[float] = field(default_factory=list)
    stopped_ms: list[float] = field(default_factory=list)
    completed_ms: list[float] = field(default_factory=list)
    completed_order: list[tuple[float, float]] = field(default_factory=list)  # (decision send time, lag ms)
    first_delta_ms: list[float] = field(default_factory=list)
    send_late_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    idle_rss: int = 0
    before: Sample | None = None
    after: Sample | None = None
    load_1m: float = 0.0
    ramp_s: float = 0.0
    server_log: list[str] = field(default_factory=list)
    server_traceback: str = ""

    @property
    def label(self) -> str:
        """The mode, and for engine steps the model: "null" or "engine whisper-tiny.en"."""
        return self.mode if self.mode == "null" else f"{self.mode} {self.model}"

    @property
    def events_ms(self) -> list[float]:
        return self.started_ms + self.stopped_ms + self.completed_ms

    def cores(self, name: str) -> float:
        assert self.before is not None and self.after is not None
        used = float(getattr(self.after, name)) - float(getattr(self.before, name))
        return used / (self.after.at - self.before.at)

    @property
    def final(self) -> Sample:
        """The sample at the window's end."""
        assert self.after is not None
        return self.after

    @property
    def rss(self) -> int:
        return self.final.gateway_rss + self.final.engine_rss

    @property
    def rss_per_session(self) -> float:
        return (self.rss - self.idle_rss) / self.sessions

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def client_late(self) -> bool:
        return percentile(self.send_late_ms, 0.95) > MAX_SEND_LATE_MS

    def backlog_growth_ms(self) -> float:
        """Median completed lag over the window's last third minus its first third."""
        ordered = [lag for _, lag in sorted(self.completed_order)]
        third = len(ordered) // 3
        if third == 0:
            return 0.0
        return statistics.median(ordered[-third:]) - statistics.median(ordered[:third])

    @property
    def held(self) -> bool:
        """Held: no errors, clients on time, and the lag within its limit (completed: not growing)."""
        if self.error_count or self.client_late or not self.completed_ms:
            return False
        if self.mode == "null":
            return percentile(self.events_ms, 0.99) <= MAX_EVENT_LAG_MS
        return (
            percentile(self.completed_ms, 0.99) <= self.max_completed_ms
            and self.backlog_growth_ms() <= self.max_completed_ms / 2
        )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values (inf counts as a value: a turn that never completed)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def analyse(step: Step, logs: list[SessionLog], loop: SpeechLoop, window: tuple[float, float]) -> None:
    """Turn the sessions' send times and events into lags within the window."""
    start, end = window
    clock = ServerClock(loop.chunk_ms)
    period = loop.chunk_ms / 1000

    def sent_at(sent: list[float], chunk: int) -> float | None:
        return sent[chunk] if chunk < len(sent) else None

    for phase, first_round, sent, events, problem in logs:
        if problem:
            step.errors[problem.split(":")[0]] += 1
        if first_round < 0:
            continue
        for chunk, at in enumerate(sent):
            if start <= at <= end:
                due = step.t_base + phase + (first_round + chunk) * period
                step.send_late_ms.append(max(0.0, (at - due) * 1000))
        items: dict[str, dict[str, tuple[int, float]]] = {}
        for kind, item_id, audio_ms, arrival in events:
            items.setdefault(item_id, {})[kind] = (audio_ms, arrival)
        heard = 0
        for item in items.values():
            if "started" in item:
                audio_start_ms, arrival = item["started"]
                # At the session's very start the padding is cut short, so the onset isn't known.
                if audio_start_ms > 0:
                    onset_ms = audio_start_ms + VAD.prefix_padding_ms
                    decided = sent_at(sent, clock.chunk_reaching(onset_ms + WINDOW_MS))
                    if decided is not None and start <= decided <= end:
                        heard += 1
                        step.started_ms.append(max(0.0, (arrival - decided) * 1000))
                    onset = sent_at(sent, onset_ms // loop.chunk_ms)
                    if onset is not None and start <= onset <= end and "delta" in item:
                        step.first_delta_ms.append(max(0.0, (item["delta"][1] - onset) * 1000))
            if "stopped" in item:
                audio_end_ms, arrival = item["stopped"]
                decided = sent_at(sent, clock.chunk_reaching(audio_end_ms + STOPPED_DECISION_MS))
                if decided is None:
                    step.errors["event before its audio"] += 1
                    continue
                if start <= decided <= end:
                    heard += 1
                    step.stopped_ms.append(max(0.0, (arrival - decided) * 1000))
                    lag = (
                        max(0.0, (item["completed"][1] - decided) * 1000) if "completed" in item else math.inf
                    )
                    step.completed_ms.append(lag)
                    step.completed_order.append((decided, lag))
        if not heard and not problem:
            step.errors["silent session"] += 1


def fmt_ms(value: float) -> str:
    return "inf" if math.isinf(value) else "-" if math.isnan(value) else f"{value:.0f}"


def fmt_s(value: float) -> str:
    return "inf" if math.isinf(value) else "-" if math.isnan(value) else f"{value / 1000:.2f}"


def fmt_errors(step: Step) -> str:
    return ", ".join(f"{n} {what}" for what, n in step.errors.most_common()) or "0"


def print_table(header: Sequence[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def null_row(step: Step) -> list[str]:
    lags = step.events_ms
    by_kind = "/".join(
        fmt_ms(percentile(x, 0.99)) for x in (step.started_ms, step.stopped_ms, step.completed_ms)
    )
    return [
        str(step.sessions),
        "yes" if step.held else "client late" if step.client_late else "no",
        str(len(lags)),
        fmt_ms(percentile(lags, 0.5)),
        fmt_ms(percentile(lags, 0.99)),
        fmt_ms(max(lags, default=math.nan)),
        by_kind,
        f"{step.cores('gateway_cpu_s'):.2f}",
        f"{step.cores('loop_cpu_s'):.2f}",
        f"{step.cores('gateway_cpu_s') * 1000 / step.sessions:.2f}",
        f"{step.cores('client_cpu_s'):.2f}",
        f"{step.cores('machine_busy_s'):.2f}",
        f"{step.load_1m:.2f}",
        f"{step.rss / 2**20:.0f}",
        f"{step.rss_per_session / 1024:.0f}",
        fmt_ms(percentile(step.send_late_ms, 0.99)),
        f"{step.ramp_s:.1f}",
        fmt_errors(step),
    ]


NULL_HEADER = (
    "N",
    "held",
    "events",
    "lag p50 ms",
    "lag p99 ms",
    "lag max ms",
    "p99 start/stop/done ms",
    "gateway cores",
    "loop thread cores",
    "gateway CPU ms per session-s",
    "client cores",
    "machine cores",
    "load 1m",
    "server RSS MB",
    "RSS/session KB",
    "send late p99 ms",
    "ramp s",
    "errors",
)


def engine_row(step: Step) -> list[str]:
    return [
        str(step.sessions),
        "yes" if step.held else "client late" if step.client_late else "no",
        str(len(step.completed_ms)),
        fmt_s(percentile(step.completed_ms, 0.5)),
        fmt_s(percentile(step.completed_ms, 0.99)),
        fmt_s(max(step.completed_ms, default=math.nan)),
        f"{step.backlog_growth_ms() / 1000:+.2f}",
        fmt_s(percentile(step.first_delta_ms, 0.5)),
        fmt_s(percentile(step.first_delta_ms, 0.99)),
        f"{fmt_ms(percentile(step.started_ms, 0.99))}/{fmt_ms(percentile(step.stopped_ms, 0.99))}",
        f"{step.cores('gateway_cpu_s'):.2f}",
        f"{step.cores('engine_cpu_s'):.2f}",
        f"{step.cores('client_cpu_s'):.2f}",
        f"{step.cores('machine_busy_s'):.2f}",
        f"{step.load_1m:.2f}",
        f"{step.final.gateway_rss / 2**20:.0f}/{step.final.engine_rss / 2**20:.0f}",
        "/".join(f"{rss / 2**20:.0f}" for rss in step.final.worker_rss) or "-",
        f"{step.rss_per_session / 2**20:.1f}",
        fmt_errors(step),
    ]


ENGINE_HEADER = (
    "N",
    "held",
    "turns",
    "completed p50 s",
    "completed p99 s",
    "completed max s",
    "growth s",
    "first delta p50 s",
    "first delta p99 s",
    "p99 start/stop ms",
    "gateway cores",
    "engine cores",
    "client cores",
    "machine cores",
    "load 1m",
    "gateway/engine RSS MB",
    "RSS per worker MB",
    "RSS/session MB",
    "errors",
)


def largest_held(steps: Sequence[Step]) -> int:
    return max((step.sessions for step in steps if step.held), default=0)


def print_server_logs(steps: Sequence[Step]) -> None:
    """Each step's unexpected server log lines, so problems in the server aren't lost in stderr."""
    noisy = [step for step in steps if step.server_log or step.server_traceback]
    if not noisy:
        print("\nserver logs: no warnings or errors beyond the anonymous-mode notice")
        return
    print("\nserver logs (warnings and errors, counted; first traceback):")
    for step in noisy:
        print(f"- {step.label} x{step.sessions}:")
        for line in step.server_log:
            print(f"    {line}")
        if step.server_traceback:
            print("    " + step.server_traceback.replace("\n", "\n    "))
