"""earshot serve, transcribe and models."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from earshot.accounts.posture import StartupRefused, check_anonymous_posture
from earshot.api.openai.formats import ResponseFormat, render
from earshot.audio.decode import AudioDecodeError, decode_audio
from earshot.engines.base import EngineError, Segment, TranscribeOptions, Transcript
from earshot.engines.workers import WorkerPool
from earshot.routing.catalog import Catalog, CatalogError, ModelNotFound
from earshot.routing.router import Router, check_engines
from earshot.settings import Settings
from earshot.store.db import Database, DatabaseError
from earshot.store.repositories import KeyRepository
from earshot.voice.chat import check_chat_models
from earshot.voice.spec import SPEECH_CAPABILITY

app = typer.Typer(help="earshot: a self-hosted speech gateway.", no_args_is_help=True, add_completion=False)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Model catalog YAML (default: $EARSHOT_CONFIG)")
]


def _settings(config: Path | None, **overrides: object) -> Settings:
    values = {key: value for key, value in overrides.items() if value is not None}
    if config is not None:
        values["config"] = config
    return Settings(**values)  # type: ignore[arg-type]


def _catalog(settings: Settings, *, servable: bool = False) -> Catalog:
    """The configured catalog; with `servable`, also every engine built once (options, packages, keys)."""
    try:
        catalog = Catalog.load(settings.config)
        if servable:
            check_engines(catalog)
            check_chat_models(catalog)
        return catalog
    except CatalogError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Gateway processes on the port (default: one per core with Redis, 1 without)"
        ),
    ] = None,
    config: ConfigOption = None,
    allow_anonymous: Annotated[
        bool, typer.Option("--allow-anonymous", help="Serve without API keys on a non-loopback address")
    ] = False,
) -> None:
    """Serve the HTTP API (migrating the database first)."""
    # Imported here so that the other commands start without loading the web server and the app.
    import uvicorn

    from earshot.cli.server import configure_logging, serve_worker
    from earshot.cli.workers import Supervisor, WorkersRefused, plan_workers

    anonymous = allow_anonymous or None
    settings = _settings(config, host=host, port=port, workers=workers, allow_anonymous=anonymous)
    _catalog(settings, servable=True)
    try:
        plan = plan_workers(settings)
        asyncio.run(_prepare_store(settings))
    except (StartupRefused, DatabaseError, WorkersRefused) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    configure_logging(plan.worker_settings)
    if plan.note:
        logging.getLogger("earshot.workers").info(plan.note)
    if plan.gateways == 1:
        serve_worker(plan.worker_settings, None)
        return
    bound = uvicorn.Config("earshot.app:create_app", host=settings.host, port=settings.port).bind_socket()
    supervisor = Supervisor(plan.gateways, bound, partial(serve_worker, plan.worker_settings))
    # Workers get the whole grace period to drain, and a little more to close down.
    status = supervisor.run(stop_timeout_s=settings.shutdown_grace_s + 15)
    raise typer.Exit(status)


async def _prepare_store(settings: Settings) -> None:
    db = Database(settings.database_url)
    try:
        await db.upgrade()
        await check_anonymous_posture(settings, KeyRepository(db))
    finally:
        await db.dispose()


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="Audio files", exists=True, dir_okay=False)],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model id (default: catalog default)")
    ] = None,
    fmt: Annotated[
        ResponseFormat, typer.Option("--format", "-f", help="Output format")
    ] = ResponseFormat.TEXT,
    config: ConfigOption = None,
) -> None:
    """Transcribe files in-process, printing each result to stdout."""
    settings = _settings(config)
    catalog = _catalog(settings)
    try:
        catalog.resolve(model)
    except ModelNotFound:
        err.print(f"[red]error:[/red] unknown model {model!r}; see `earshot models`")
        raise typer.Exit(2) from None
    pool = WorkerPool(settings.engine_workers)
    try:
        router = Router(catalog, pool)
    except CatalogError as e:
        pool.shutdown()
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    failures = asyncio.run(_transcribe_files(files, model, fmt, settings, router, pool))
    raise typer.Exit(1 if failures else 0)


async def _transcribe_files(
    files: list[Path],
    model: str | None,
    fmt: ResponseFormat,
    settings: Settings,
    router: Router,
    pool: WorkerPool,
) -> int:
    route = router.route(model)
    failures = 0
    try:
        try:
            await router.start(route.model_id)
        except EngineError as e:
            err.print(f"[red]error:[/red] model {route.model_id!r} could not start: {e}")
            return len(files)
        for path in files:
            try:
                audio = await asyncio.to_thread(
                    decode_audio, path.read_bytes(), max_seconds=settings.max_audio_seconds
                )
            except (AudioDecodeError, OSError) as e:
                err.print(f"[red]error:[/red] {path}: {e}")
                failures += 1
                continue
            segments: list[Segment] = []
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
                disable=audio.duration_s < 30 or not err.is_terminal,
            ) as progress:
                task = progress.add_task(path.name, total=audio.duration_s)
                # verbose_json shows words: engines that align them only on request (Whisper) are asked to.
                options = TranscribeOptions(word_timestamps=fmt is ResponseFormat.VERBOSE_JSON)
                async for segment in route.engine.transcribe_segments(audio, options):
                    segments.append(segment)
                    progress.update(task, completed=segment.end)
            transcript = Transcript.from_segments(segments, route.engine.language, audio.duration_s)
            body, _ = render(transcript, fmt, audio.duration_s, granularities={"word", "segment"})
            if len(files) > 1 and fmt is not ResponseFormat.JSON and fmt is not ResponseFormat.VERBOSE_JSON:
                sys.stdout.write(f"==> {path} <==\n")
            sys.stdout.write(json.dumps(body) + "\n" if isinstance(body, dict) else body)
            sys.stdout.flush()
    finally:
        await router.stop()
        await asyncio.to_thread(pool.shutdown)
    return failures


@app.command()
def models(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """List the models this configuration serves: speech models, their aliases, then chat models."""
    catalog = _catalog(_settings(config))
    rows = []
    for model_id in catalog.public_ids():
        canonical = catalog.resolve(model_id)
        spec = catalog.models[canonical]
        rows.append(
            {
                "id": model_id,
                "alias_of": canonical if canonical != model_id else None,
                "engine": spec.engine,
                "capabilities": list(spec.capabilities),
                "fallbacks": list(spec.fallbacks),
                "default": canonical == catalog.default_model,
            }
        )
    for model_id in catalog.public_speech_ids():
        canonical = catalog.resolve_speech(model_id)
        synthesis = catalog.speech_models[canonical]
        rows.append(
            {
                "id": model_id,
                "alias_of": canonical if canonical != model_id else None,
                "engine": synthesis.engine,
                "capabilities": [SPEECH_CAPABILITY],
                "fallbacks": list(synthesis.fallbacks),
                "default": canonical == catalog.default_speech_model,
            }
        )
    for model_id, chat in catalog.chat_models.items():
        rows.append(
            {
                "id": model_id,
                "alias_of": None,
                "engine": chat.engine,
                "capabilities": ["chat"],
                "fallbacks": list(chat.fallbacks),
                "default": model_id == catalog.default_chat_model,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "engine", "capabilities", "fallbacks", "alias of", "default")
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["engine"]),
            ", ".join(row["capabilities"]),  # type: ignore[arg-type]
            ", ".join(row["fallbacks"]),  # type: ignore[arg-type]
            str(row["alias_of"] or ""),
            "yes" if row["default"] else "",
        )
    Console().print(table)
