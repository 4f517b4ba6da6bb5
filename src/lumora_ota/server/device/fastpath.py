"""A pure-ASGI shortcut for the hottest device GETs: the Expo manifest and assets.

Devices make nearly every request, and on these two routes FastAPI's routing, dependency
solving and exception layers cost more CPU than the answer itself (memoized bytes). This
middleware, the innermost one, matches those routes itself and calls the *same* endpoint
functions the FastAPI routes use, so there is one implementation and the routes keep their
OpenAPI documentation; every other request goes to FastAPI unchanged.

It only takes a route whose endpoint needs nothing FastAPI would resolve: its parameters
must be the route's path parameters plus a ``request: Request``. A route that grows other
parameters (headers, queries, dependencies) is left to FastAPI, still correct, just slower.
Errors go to the application's exception handlers, as Starlette's ``ExceptionMiddleware``
would send them (problem+json); anything unhandled reaches the server-error layer (500).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

FAST_PATH_TEMPLATES = ("/api/v1/expo/{project}/manifest", "/api/v1/assets/{name}")
FAST_PATH_PREFIXES = ("/api/v1/expo/", "/api/v1/assets/")
# As Starlette takes them: sync or async, given the request and the exception.
ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]


def takes_only_path_and_request(route: APIRoute) -> bool:
    """Whether ``route``'s endpoint can be called with its path parameters and the request,
    with no dependency FastAPI would have run first."""
    parameters = inspect.signature(route.endpoint).parameters
    return (
        not route.dependencies
        and set(parameters) == {*route.param_convertors, "request"}
        and all(p.kind is not inspect.Parameter.POSITIONAL_ONLY for p in parameters.values())
    )


def fast_routes(routes: Sequence[BaseRoute]) -> list[APIRoute]:
    """The routes (FastAPI's included routers too) the shortcut may answer."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            if route.path in FAST_PATH_TEMPLATES and takes_only_path_and_request(route):
                found.append(route)
            continue
        # FastAPI >= 0.16x keeps an included router as one route holding the original router
        # and how it was included; its routes' paths are then relative to the prefix. Only
        # routers included as they are (no prefix, no dependencies) qualify.
        original = getattr(route, "original_router", None)
        context = getattr(route, "include_context", None)
        plain = context is not None and not context.prefix and not context.dependencies
        if original is not None and plain and not original.dependencies:
            found.extend(fast_routes(original.routes))
    return found


class DeviceFastPath:
    """Answers the manifest and asset routes without FastAPI's routing layers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Callable[[], Sequence[BaseRoute]],
        exception_handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        self.app = app
        self._all_routes = routes
        self._exception_handlers = exception_handlers
        self._routes: list[APIRoute] | None = None  # found on first use: all are added by then

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and scope["path"].startswith(FAST_PATH_PREFIXES)
        ):
            if self._routes is None:
                self._routes = fast_routes(self._all_routes())
            for route in self._routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    scope["route"] = route
                    await self._answer(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response: Response = await route.endpoint(**scope["path_params"], request=request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            handled = handler(request, exc)
            response = await handled if inspect.isawaitable(handled) else handled
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        # As Starlette's ExceptionMiddleware: the most specific class wins; ``Exception``
        # itself belongs to the server-error layer.
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            handler = self._exception_handlers.get(cls)
            if handler is not None:
                return handler
        return None
