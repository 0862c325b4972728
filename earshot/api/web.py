"""The web page: `earshot/web/index.html` at `/`, its script, styles and audio worklet under `/web/`.

Only these two paths are claimed, so the page can never shadow an API route or change an API 404 or 405.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
ASSETS_PATH = "/web"
# Named here rather than guessed: the system's mime.types differs between hosts, and a module script must be
# served as JavaScript.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The files have no hashed names (no build step), so browsers keep them but revalidate each load (ETag).
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
}


class WebFiles(StaticFiles):
    """The page's static files with fixed content types and the page's caching and security headers."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        media_type = MEDIA_TYPES.get(Path(full_path).suffix, "application/octet-stream")
        response = FileResponse(
            full_path,
            status_code=status_code,
            stat_result=stat_result,
            media_type=media_type,
            headers=PAGE_HEADERS,
        )
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


def mount_web_page(app: FastAPI) -> None:
    """Serve the page at `/` and its assets under `/web/`; call after every API router is included."""
    files = WebFiles(directory=WEB_DIR)

    async def index(request: Request) -> Response:
        return await files.get_response("index.html", request.scope)

    app.add_api_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount(ASSETS_PATH, files, name="web")
