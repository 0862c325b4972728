"""earshot keys, usage, settings and db: account administration straight on the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from earshot.accounts.keys import UNSET, ApiKey, KeyChanges, KeyRing
from earshot.accounts.revocation import RevocationFeed
from earshot.api.usage import BadInstant, parse_instant, total_json, usage_window
from earshot.cli.main import err
from earshot.dials import DialBoard, DialError, Dials
from earshot.settings import Settings
from earshot.store.db import Database, DatabaseError
from earshot.store.repositories import DialRepository, KeyRepository, UsageRepository

T = TypeVar("T")

keys_app = typer.Typer(help="Create, list, change and revoke API keys.", no_args_is_help=True)
settings_app = typer.Typer(help="Read and change runtime settings (applied live).", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _run(work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` against the configured database, migrated first."""

    async def main() -> T:
        db = Database(Settings().database_url)
        try:
            await db.upgrade()
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except DatabaseError as e:
        raise _fail(str(e), 2) from e


def _expiry(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value, "expires")
    except BadInstant as e:
        raise _fail(f"--expires: {value!r} is not an ISO date or time", 2) from e


def _models(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(model.strip() for model in value.split(",") if model.strip())


def _print_keys(keys: list[ApiKey], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([key.to_json() for key in keys], indent=2))
        return
    table = Table("id", "name", "state", "models", "credits s", "rpm", "sessions", "expires")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            key.state,
            ",".join(key.models) if key.models is not None else "all",
            f"{key.credits_seconds:g}" if key.credits_seconds is not None else "unlimited",
            str(key.rpm or "-"),
            str(key.max_sessions or "-"),
            key.expires_at.isoformat() if key.expires_at else "-",
        )
    Console().print(table)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="What the key is for")],
    models: Annotated[str | None, typer.Option(help="Comma-separated model ids (default: all)")] = None,
    credits_seconds: Annotated[float | None, typer.Option(min=0, help="Credit in audio seconds")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute")] = None,
    max_sessions: Annotated[int | None, typer.Option(min=1, help="Concurrent sessions")] = None,
    expires: Annotated[str | None, typer.Option(help="Expiry, ISO date or time")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it; it is shown this once only."""
    expires_at = _expiry(expires)

    async def work(db: Database) -> tuple[ApiKey, str]:
        return await KeyRing(KeyRepository(db)).create(
            name,
            models=_models(models),
            credits_seconds=credits_seconds,
            rpm=rpm,
            max_sessions=max_sessions,
            expires_at=expires_at,
        )

    key, plaintext = _run(work)
    if as_json:
        typer.echo(json.dumps({**key.to_json(), "key": plaintext}, indent=2))
        return
    err.print(f"created key [bold]{key.id}[/bold] ({name}); store it now, it won't be shown again:")
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """List every key (never secrets)."""
    _print_keys(_run(lambda db: KeyRing(KeyRepository(db)).list()), as_json)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id")], as_json: JsonOption = False) -> None:
    """Revoke a key: every worker refuses it within a second."""

    async def work(db: Database) -> ApiKey | None:
        key = await KeyRing(KeyRepository(db)).revoke(key_id)
        settings = Settings()
        if key is not None and settings.redis_url:
            from redis.asyncio import Redis

            redis = Redis.from_url(settings.redis_url)
            try:
                await RevocationFeed(redis, settings.redis_prefix).publish(key_id)
            finally:
                await redis.aclose()
        return key

    key = _run(work)
    if key is None:
        raise _fail(f"no key with id {key_id!r}")
    _print_keys([key], as_json)


@keys_app.command("update")
def keys_update(
    key_id: Annotated[str, typer.Argument(help="Key id")],
    name: Annotated[str | None, typer.Option(help="New name")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated model ids")] = None,
    all_models: Annotated[bool, typer.Option("--all-models", help="Allow every model")] = False,
    credits_seconds: Annotated[float | None, typer.Option(min=0, help="Set the credit balance")] = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="Remove the credit limit")] = False,
    rpm: Annotated[int | None, typer.Option(min=0, help="Requests per minute (0: default)")] = None,
    max_sessions: Annotated[int | None, typer.Option(min=0, help="Sessions (0: default)")] = None,
    expires: Annotated[str | None, typer.Option(help="Expiry, ISO date or time ('never' clears)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a key's name, models, credit or limits."""
    changes = KeyChanges(
        name=name,
        models=None if all_models else _models(models) if models is not None else UNSET,
        credits_seconds=None if unlimited else credits_seconds if credits_seconds is not None else UNSET,
        rpm=(rpm or None) if rpm is not None else UNSET,
        max_sessions=(max_sessions or None) if max_sessions is not None else UNSET,
        expires_at=UNSET if expires is None else None if expires == "never" else _expiry(expires),
    )
    key = _run(lambda db: KeyRing(KeyRepository(db)).update(key_id, changes))
    if key is None:
        raise _fail(f"no key with id {key_id!r}")
    _print_keys([key], as_json)


def usage(
    start: Annotated[str | None, typer.Option(help="From (ISO date/time); default 30 days ago")] = None,
    end: Annotated[str | None, typer.Option(help="Until (ISO date/time); default now")] = None,
    group_by: Annotated[str, typer.Option(help="model, day or key")] = "model",
    key: Annotated[str | None, typer.Option("--key", help="Only this key id")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show usage: requests, audio seconds and cost per model, day or key."""
    if group_by not in ("model", "day", "key"):
        raise _fail("--group-by must be model, day or key", 2)
    try:
        start_at, end_at = usage_window(start, end)
    except BadInstant as e:
        raise _fail(str(e), 2) from e
    totals = _run(
        lambda db: UsageRepository(db).totals(
            start=start_at,
            end=end_at,
            group_by=group_by,  # type: ignore[arg-type]
            key_id=key,
        )
    )
    rows = [{group_by: total.group, **total_json(total)} for total in totals]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(group_by, "requests", "audio s", "quantity", "cost")
    for row in rows:
        table.add_row(
            str(row[group_by] or "anonymous" if group_by == "key" else row[group_by] or "-"),
            str(row["requests"]),
            f"{row['audio_seconds']:.3f}",
            f"{row['quantity']:g}",
            f"{row['cost']:g}",
        )
    Console().print(table)


def _board(db: Database) -> DialBoard:
    return DialBoard(DialRepository(db), Dials.from_settings(Settings()))


@settings_app.command("list")
def settings_list(as_json: JsonOption = False) -> None:
    """Show every runtime setting's current value."""

    async def work(db: Database) -> Dials:
        return await _board(db).refresh()

    values = _run(work).model_dump()
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    for name, value in values.items():
        typer.echo(f"{name} = {value}")


@settings_app.command("get")
def settings_get(name: Annotated[str, typer.Argument(help="Setting name")]) -> None:
    """Print one runtime setting's value."""

    async def work(db: Database) -> dict[str, Any]:
        return (await _board(db).refresh()).model_dump()

    values = _run(work)
    if name not in values:
        raise _fail(f"unknown setting {name!r}; known: {', '.join(values)}", 2)
    typer.echo(json.dumps(values[name]))


@settings_app.command("set")
def settings_set(
    name: Annotated[str, typer.Argument(help="Setting name")],
    value: Annotated[str, typer.Argument(help="New value")],
    as_json: JsonOption = False,
) -> None:
    """Change a runtime setting; running servers apply it within a second."""

    async def work(db: Database) -> Dials:
        board = _board(db)
        await board.refresh()
        return await board.set({name: value})

    dials = _change_dials(work, as_json)
    if dials is not None:
        typer.echo(f"{name} = {getattr(dials, name)}")


def _change_dials(work: Callable[[Database], Awaitable[Dials]], as_json: bool) -> Dials | None:
    """Run a dial change; print every dial as JSON (then return None) or return them for a one-line note."""
    try:
        dials = _run(work)
    except DialError as e:
        raise _fail(str(e), 2) from e
    if as_json:
        typer.echo(json.dumps(dials.model_dump(), indent=2))
        return None
    return dials


@settings_app.command("reset")
def settings_reset(
    name: Annotated[str, typer.Argument(help="Setting name")], as_json: JsonOption = False
) -> None:
    """Return a runtime setting to its configured default (the server's environment decides it)."""

    async def work(db: Database) -> Dials:
        return await _board(db).reset([name])

    if _change_dials(work, as_json) is not None:
        typer.echo(f"{name} reset to its default")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending database migrations (serve does this too)."""

    async def work(db: Database) -> str:
        return db.safe_url

    url = _run(work)
    err.print(f"database {url} is up to date")


def register(app: typer.Typer) -> None:
    """Add the account commands to the main CLI."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(settings_app, name="settings")
    app.add_typer(db_app, name="db")
    app.command("usage")(usage)
