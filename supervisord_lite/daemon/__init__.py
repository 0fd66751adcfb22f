"""The daemon process: the composition root that wires the supervisor to its edges
(control socket, HTTP server with metrics and the status page, systemd notify,
signals). Run as ``python -m supervisord_lite.daemon``.
"""
