"""The viewer web app (``/``) and the operator console (``/console``), served by the gateway.

Static files only (plain ES modules, no build step): ``web/`` beside this module, and the
player libraries from ``player/node_modules``'s dist files (pinned in player/package.json),
so a page loads no script from a third party. Every page carries a CSP with
``script-src 'self'``; pages and app files revalidate on each load (they are not
fingerprinted), the pinned libraries are cached for a day.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

WEB = Path(__file__).resolve().parent / "web"
NODE_MODULES = Path(__file__).resolve().parents[2] / "player" / "node_modules"
# URL name -> the library's dist file (the UMD builds set window.dashjs / window.Hls)
VENDOR = {
    "dash.all.min.js": NODE_MODULES / "dashjs/dist/modern/umd/dash.all.min.js",
    "hls.min.js": NODE_MODULES / "hls.js/dist/hls.min.js",
}
PAGES = {"/": "index.html", "/console": "console.html"}
APP_FILE = re.compile(r"^[a-z0-9-]{1,40}\.(js|css|svg)$")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# manifests and segments come from edges on other origins (connect-src); MSE plays blob:
# URLs (media-src); hls.js runs its transmuxer in a blob: worker
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' http: https:; media-src 'self' blob:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
REVALIDATE = "no-cache"
PINNED = "public, max-age=86400"


def _file(path: Path, cache: str) -> web.FileResponse:
    if not path.is_file():
        raise web.HTTPNotFound()
    response = web.FileResponse(path)
    response.content_type = CONTENT_TYPES[path.suffix].split(";")[0]
    response.headers["Content-Type"] = CONTENT_TYPES[path.suffix]
    response.headers["Cache-Control"] = cache
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def handle_page(request: web.Request) -> web.FileResponse:
    return _file(WEB / PAGES[request.path], REVALIDATE)


async def handle_app_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if not APP_FILE.match(name):  # only files of web/ itself: no path traversal
        raise web.HTTPNotFound()
    return _file(WEB / name, REVALIDATE)


async def handle_vendor(request: web.Request) -> web.FileResponse:
    path = VENDOR.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return _file(path, PINNED)


def mount(app: web.Application) -> None:
    """Add the app's pages, its files (``/web/``) and the libraries (``/vendor/``)."""
    for path in PAGES:
        app.router.add_get(path, handle_page)
    app.router.add_get("/web/{name}", handle_app_file)
    app.router.add_get("/vendor/{name}", handle_vendor)
