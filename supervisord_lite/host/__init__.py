"""Facts about this machine, read synchronously: the process table, who listens on
which port, and what a previous daemon left behind (crash recovery). Shared by the
runtime and the CLI, so ``svc status`` with no daemon never loads the supervisor.
"""
