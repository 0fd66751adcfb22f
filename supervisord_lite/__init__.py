"""supervisord-lite: one TOML manifest, a daemon that starts services in order,
waits for real readiness, restarts what fails, refuses port conflicts and exports
per-port health as Prometheus metrics."""

__version__ = "0.1.0"
