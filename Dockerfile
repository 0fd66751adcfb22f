# The image every stand-in of config/demo.toml runs in under `svc export` (Compose, Kubernetes).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY supervisord_lite ./supervisord_lite
RUN pip install --no-cache-dir .
