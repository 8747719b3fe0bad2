"""The webhook's event loop: uvloop's when installed, asyncio's (with a warning) otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tenantry.webhook import run


def test_uvloop_serves_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    factory, name = run.loop_factory()
    assert name == "uvloop" and factory is uvloop.new_event_loop
    loop = factory()
    try:
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()


def test_asyncio_serves_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    factory, name = run.loop_factory()
    assert name == "asyncio" and factory is asyncio.new_event_loop
