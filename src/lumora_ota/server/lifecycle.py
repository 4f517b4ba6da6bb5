"""Start-up and shutdown hooks that server components register with the app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Hook = Callable[[], Awaitable[None]]


class Lifecycle:
    """Runs start hooks in registration order and stop hooks in reverse."""

    def __init__(self) -> None:
        self._start: list[Hook] = []
        self._stop: list[Hook] = []

    def on_start(self, hook: Hook) -> None:
        """Run ``hook`` once the database is migrated, before serving."""
        self._start.append(hook)

    def on_stop(self, hook: Hook) -> None:
        """Run ``hook`` at graceful shutdown."""
        self._stop.append(hook)

    async def start(self) -> None:
        """Run every start hook."""
        for hook in self._start:
            await hook()

    async def stop(self) -> None:
        """Run every stop hook, newest first; one failing does not skip the rest."""
        errors: list[BaseException] = []
        for hook in reversed(self._stop):
            try:
                await hook()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
