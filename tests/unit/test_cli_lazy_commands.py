"""`svc` loads a command's module on first use: the table of modules must stay complete."""

from __future__ import annotations

import subprocess
import sys

from supervisord_lite.cli.app import main
from supervisord_lite.cli.lazygroup import COMMAND_MODULES, load_all


def test_the_table_names_every_command_and_the_module_that_registers_it() -> None:
    load_all()
    assert set(main.commands) == set(COMMAND_MODULES)
    for name, command in main.commands.items():
        assert command.callback is not None
        assert command.callback.__module__ == f"supervisord_lite.cli.{COMMAND_MODULES[name]}", name


def test_svc_status_does_not_load_the_other_command_modules() -> None:
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from supervisord_lite.cli import main\n"
        "CliRunner().invoke(main, ['status', '--help'])\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('supervisord_lite.cli.'))))\n"
    )
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                timeout=60).stdout.strip().split(","))
    assert "supervisord_lite.cli.daemon_commands" in loaded
    assert not loaded & {"supervisord_lite.cli.logs_commands", "supervisord_lite.cli.run_command",
                         "supervisord_lite.cli.export_commands"}, loaded
