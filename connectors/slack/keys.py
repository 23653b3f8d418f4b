"""The Redis keys the Slack connector keeps for itself (the core's are in ``bridge.engine.keys``)."""

from __future__ import annotations


def post_attempt(job_id: str) -> str:
    """STRING: an outbox job has tried to post to Slack. A second run of it first looks for the
    message the first left (Slack has no idempotency key). Expires after an hour."""
    return "{slack}:post-attempt:" + job_id
