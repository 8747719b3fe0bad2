"""asyncio helpers the components share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import MutableSequence


async def cancel_all(tasks: MutableSequence[asyncio.Task[None]]) -> None:
    """Cancel background tasks (watches, keepers) and wait until each has stopped, then forget
    them: a task left running would use a client its owner is about to close."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    del tasks[:]
