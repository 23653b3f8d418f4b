"""Where stored events come from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Endpoint:
    """Where stored events come from: a store's or a creator's platform pushes, or a destination's
    own deliveries (``destination``/``slack``: what people did in Slack)."""

    kind: Literal["store", "creator", "destination"]
    id: str

    @property
    def tag(self) -> str:
        """The Redis hash tag of everything this endpoint owns."""
        return "{" + self.kind + ":" + self.id + "}"

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"
