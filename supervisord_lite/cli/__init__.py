"""The ``svc`` command line: a thin client of the daemon.

It reads manifests (``core``) and facts about this machine (``host``), talks to the
daemon over its control socket, and renders what it hears. It never imports the
runtime or the daemon: the daemon is started as its own process.
"""

from supervisord_lite.cli.app import main  # its commands load on first use (cli/lazygroup.py)

__all__ = ["main"]
