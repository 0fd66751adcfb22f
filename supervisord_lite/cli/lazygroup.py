"""The `svc` group loads a command's module only when that command runs.

Every `svc` call pays for the imports of the modules it loads; `svc status` needs
the daemon commands, not the log viewer, the exporters or `svc run`. The table
below names each command's module; `svc --help` and shell completion still see
every command (listing them loads them all).
"""

from __future__ import annotations

import importlib

import click

#: command name -> module under supervisord_lite.cli that registers it on ``main``.
COMMAND_MODULES: dict[str, str] = {
    "up": "daemon_commands",
    "down": "daemon_commands",
    "restart": "daemon_commands",
    "status": "daemon_commands",
    "reload": "daemon_commands",
    "daemon": "daemon_commands",
    "shutdown": "daemon_commands",
    "logs": "logs_commands",
    "check": "manifest_commands",
    "config": "manifest_commands",
    "ports": "manifest_commands",
    "who": "manifest_commands",
    "add": "manifest_commands",
    "export": "export_commands",
    "run": "run_command",
    "signal": "signal_command",
    "completion": "completion",
    "ls": "machine_commands",
}


class LazyGroup(click.Group):
    """A click group whose commands are registered by their modules on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"supervisord_lite.cli.{COMMAND_MODULES[cmd_name]}")
        return self.commands.get(cmd_name)


def load_all() -> None:
    """Register every command (for code that walks ``main.commands``)."""
    for module in sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"supervisord_lite.cli.{module}")
