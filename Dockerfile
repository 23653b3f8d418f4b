# feige-bridge: `bridge serve` as a non-root user. Redis comes from REDIS_URL (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY connectors ./connectors
COPY rules ./rules
# /app/var: the archive's SQLite file when ARCHIVE_URL is not set, and var/held (server.held_dir: a
# Slack event at its last try while Redis is down; a volume of its own in docker-compose.yml).
RUN pip install . && useradd --system --uid 10001 --home-dir /app bridge && install -d -o bridge /app/var /app/var/held
COPY --chown=bridge config ./config

USER bridge
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('BRIDGE_PORT', '8080')}/healthz\", timeout=2)"]
# SIGTERM (docker stop) shuts down gracefully: give it longer than server.shutdown_grace_seconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["bridge"]
CMD ["serve", "--config", "/app/config/example.yaml"]
