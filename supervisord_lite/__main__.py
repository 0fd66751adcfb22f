"""`python -m supervisord_lite ...` is the `svc` command (how `svc up` starts the daemon)."""

from supervisord_lite.cli import main

main(prog_name="svc")
