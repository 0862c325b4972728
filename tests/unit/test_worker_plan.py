"""How many gateway processes `earshot serve` runs, and what each of them gets."""

from __future__ import annotations

import pytest

from earshot.cli.workers import WorkersRefused, plan_workers
from earshot.settings import Settings, cpu_count


def test_unset_workers_mean_one_per_core_with_redis_and_share_out_the_engine_processes() -> None:
    plan = plan_workers(Settings(redis_url="redis://localhost", engine_workers=8, decode_concurrency=8))
    assert plan.gateways == cpu_count()
    assert plan.worker_settings.engine_workers == max(1, 8 // cpu_count())
    assert plan.worker_settings.decode_concurrency == max(1, 8 // cpu_count())


def test_unset_workers_without_redis_serve_with_one_and_keep_every_engine_process() -> None:
    plan = plan_workers(Settings(engine_workers=4))
    assert plan.gateways == 1
    assert plan.worker_settings.engine_workers == 4


def test_each_worker_keeps_at_least_one_engine_process() -> None:
    plan = plan_workers(Settings(workers=4, redis_url="redis://localhost", engine_workers=2))
    assert (plan.gateways, plan.worker_settings.engine_workers) == (4, 1)


def test_several_workers_without_redis_are_refused_with_the_reason() -> None:
    with pytest.raises(WorkersRefused, match="--workers 3 needs EARSHOT_REDIS_URL"):
        plan_workers(Settings(workers=3))


def test_several_workers_on_an_in_memory_database_are_refused() -> None:
    settings = Settings(workers=2, redis_url="redis://localhost", database_url="sqlite+aiosqlite://")
    with pytest.raises(WorkersRefused, match="in-memory SQLite"):
        plan_workers(settings)


def test_forwarded_allow_ips_is_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARSHOT_FORWARDED_ALLOW_IPS", "10.0.0.1, 10.0.0.2")
    assert Settings().forwarded_allow_ips == ["10.0.0.1", "10.0.0.2"]
    monkeypatch.setenv("EARSHOT_FORWARDED_ALLOW_IPS", "")
    assert Settings().forwarded_allow_ips == []
