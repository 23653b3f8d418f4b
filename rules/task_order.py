"""B1 — what a task order carries. Its explanation message (说明话术), which the platform sends to the
consumer in the creator's name, is at most 100 characters: the platform's own limit, so a push with a
longer one breaks the platform's contract and is refused like any malformed push."""

from __future__ import annotations

EXPLANATION_MAX_CHARS = 100
