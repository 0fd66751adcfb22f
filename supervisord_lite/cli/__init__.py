"""The ``svc`` command line: a thin client of the daemon.

It reads manifests (``core``) and facts about this machine (``host``), talks to the
daemon over its control socket, and renders what it hears. It never imports the
runtime or the daemon: the daemon is started as its own process.

``main`` is the click app (``cli.app``; its commands load on first use, ``cli.lazygroup``);
it is imported on first use, so the console script (``cli.entry``) can serve its quick
commands without click.
"""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from supervisord_lite.cli.app import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
