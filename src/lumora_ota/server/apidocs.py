"""``GET /docs``: Swagger UI for ``/openapi.json``, served from this server only.

FastAPI's default page loads an unpinned Swagger UI from a public CDN into our origin (a CDN
compromise would run script next to the dashboard) and needs an inline script. This page
loads the Swagger UI 5 files that the ``swagger-ui-py`` package ships, from
``/docs/static/``, and starts it from ``/docs/init.js``, under a CSP that allows script from
this origin only (no inline script, no eval, nothing from elsewhere, no framing).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from lumora_ota.server.problems import ProblemError

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
DOCS_HEADERS = {
    "content-security-policy": DOCS_CSP,
    "cache-control": "no-cache",
    "cross-origin-opener-policy": "same-origin",
}
# The files the page uses, by URL name; nothing else of the package is served.
STATIC_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lumora OTA API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""
INIT_JS = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
});
"""


def swagger_ui_dir() -> Path:
    """The directory of Swagger UI's distribution files inside ``swagger-ui-py`` (found
    without importing the package, which would load its web-framework adapters)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install(app: FastAPI) -> None:
    """Add ``/docs``, ``/docs/init.js`` and ``/docs/static/{name}``."""
    static = swagger_ui_dir()
    missing = [name for name in STATIC_FILES if not (static / name).is_file()]
    if missing:  # a broken install: refuse to start rather than serve a blank page
        raise RuntimeError(f"swagger-ui-py lacks {', '.join(missing)} in {static}")

    async def page(request: Request) -> Response:
        return Response(PAGE, media_type="text/html; charset=utf-8", headers=DOCS_HEADERS)

    async def init_js(request: Request) -> Response:
        return Response(INIT_JS, media_type="text/javascript; charset=utf-8", headers=DOCS_HEADERS)

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise ProblemError(404, "no such documentation file")
        return FileResponse(
            static / name,
            media_type=media_type,
            headers={**DOCS_HEADERS, "cache-control": "public, max-age=86400"},
        )

    app.add_route("/docs", page, methods=["GET"], include_in_schema=False)
    app.add_route("/docs/init.js", init_js, methods=["GET"], include_in_schema=False)
    app.add_route("/docs/static/{name}", static_file, methods=["GET"], include_in_schema=False)
