"""earshot transcripts: every key's stored transcripts, straight on the database (the operator's view)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from earshot.api.transcripts.documents import Document, ExportFormat, render
from earshot.cli.accounts import JsonOption, _fail, _run
from earshot.cli.main import err
from earshot.store.db import Database
from earshot.store.transcripts import TranscriptRepository

transcripts_app = typer.Typer(help="List, show, export and delete stored transcripts.", no_args_is_help=True)
IdArgument = Annotated[str, typer.Argument(help="Transcript id")]


def _document(document_id: str) -> Document:
    async def work(db: Database) -> Document | None:
        record = await TranscriptRepository(db).get(document_id, None, anyone=True)
        return Document.of(record) if record is not None else None

    document = _run(work)
    if document is None:
        raise _fail(f"no transcript {document_id!r}")
    return document


@transcripts_app.command("list")
def transcripts_list(
    key: Annotated[str | None, typer.Option("--key", help="Only this key's transcripts (a key id)")] = None,
    anonymous: Annotated[bool, typer.Option("--anonymous", help="Only those made without a key")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first")] = 50,
    after: Annotated[str | None, typer.Option(help="Start after this transcript id")] = None,
    as_json: JsonOption = False,
) -> None:
    """Stored transcripts, newest first."""
    if key is not None and anonymous:
        raise _fail("--key and --anonymous exclude each other", 2)

    async def work(db: Database) -> list[tuple[str | None, Document]]:
        records = await TranscriptRepository(db).page(
            key, limit=limit, after=after, anyone=key is None and not anonymous
        )
        return [(record.key_id, Document.of(record)) for record in records]

    rows = _run(work)
    if as_json:
        typer.echo(json.dumps([{"key_id": k, **d.model_dump(mode="json")} for k, d in rows], indent=2))
        return
    table = Table("key", "name", "model", "audio s", "validated", "created")
    # Ids are what the other commands take: never cut short.
    table.columns.insert(0, Column("id", no_wrap=True, min_width=36))
    for key_id, document in rows:
        table.add_row(
            document.id,
            key_id or "anonymous",
            document.name,
            document.model,
            f"{document.duration:.1f}",
            "yes" if document.validated is not None else "no",
            document.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    Console().print(table)


@transcripts_app.command("show")
def transcripts_show(document_id: IdArgument, as_json: JsonOption = False) -> None:
    """One transcript: its details and text (the validated version when there is one)."""
    document = _document(document_id)
    if as_json:
        typer.echo(document.model_dump_json(indent=2))
        return
    err.print(
        f"[bold]{document.name}[/bold]  {document.model}  {document.duration:.1f} s  "
        f"{'validated' if document.validated is not None else 'machine'} version"
    )
    typer.echo(render(document, ExportFormat.TXT), nl=False)


@transcripts_app.command("export")
def transcripts_export(
    document_id: IdArgument,
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="srt, vtt, txt or json")] = (
        ExportFormat.SRT
    ),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout")
    ] = None,
) -> None:
    """Render a transcript as subtitles, text or JSON (the validated version when there is one)."""
    body = render(_document(document_id), format)
    if output is None:
        typer.echo(body, nl=False)
        return
    output.write_text(body, encoding="utf-8")
    err.print(f"wrote {output}")


@transcripts_app.command("delete")
def transcripts_delete(document_id: IdArgument) -> None:
    """Delete a stored transcript."""

    async def work(db: Database) -> bool:
        return await TranscriptRepository(db).delete(document_id, None, anyone=True)

    if not _run(work):
        raise _fail(f"no transcript {document_id!r}")
    err.print(f"deleted transcript {document_id}")


def register(app: typer.Typer) -> None:
    """Add `earshot transcripts` to the main CLI."""
    app.add_typer(transcripts_app, name="transcripts")
