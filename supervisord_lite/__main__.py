"""`python -m supervisord_lite ...` is the `svc` command (how `svc up` starts the daemon)."""

from supervisord_lite.cli.entry import main  # the quick commands, else the click app

main(prog_name="svc")
