"""The running supervisor: child processes and their output, readiness and liveness
probes, port watching, service logs, resource samples, file watching, and the
lifecycle of every service. Built on anyio; knows nothing of sockets or the CLI.
"""
