"""The pure core: the manifest model and its loading rules, the start graph, the
service states and restart policy, snapshots, durations, exit codes and the control
protocol's messages. No I/O libraries (anyio, psutil, prometheus_client, structlog):
everything here can be tested with plain values.
"""
