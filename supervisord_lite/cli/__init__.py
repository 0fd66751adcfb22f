"""The ``svc`` command line: a thin client of the daemon.

It reads manifests (``core``) and facts about this machine (``host``), talks to the
daemon over its control socket, and renders what it hears. It never imports the
runtime or the daemon: the daemon is started as its own process.
"""

from supervisord_lite.cli import daemon_commands, export_commands, logs_commands, machine_commands, manifest_commands  # noqa: F401  (they add commands)
from supervisord_lite.cli import completion, run_command, signal_command  # noqa: F401  (they add commands)
from supervisord_lite.cli.app import main

__all__ = ["main"]
