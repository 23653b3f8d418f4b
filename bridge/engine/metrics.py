"""Prometheus metrics of the bridge (A9 response times, and the plumbing), served on /metrics.

These are per process; run several replicas and Prometheus sums them. The on-demand summary
(`/feige stats`) reads the same figures from Redis, where every replica adds to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.chats_opened = Counter("feige_chats_opened", "Platform CS chats opened", ["store"], registry=r)
        self.chats_closed = Counter("feige_chats_closed", "Platform CS chats closed", ["store", "reason"], registry=r)
        self.chats_lost = Counter(
            "feige_chats_lost_to_timeout", "Chats closed unanswered (service ticket)", ["store", "agent"], registry=r
        )
        self.replies = Counter(
            "feige_replies", "Merchant replies sent to the platform", ["store", "agent", "in_window"], registry=r
        )
        self.first_reply = Histogram(
            "feige_first_reply_seconds",
            "Time from a chat's first platform message to the merchant's first reply",
            ["store", "agent"],
            buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180),
            registry=r,
        )
        self.pushes = Counter("feige_pushes", "Platform pushes answered, by HTTP status", ["status"], registry=r)
        self.push_redeliveries = Counter(
            "feige_push_redeliveries", "Records of platform pushes that were stored before (sent again)", ["endpoint"],
            registry=r,
        )  # fmt: skip
        self.outbox = Counter(
            "feige_outbox_jobs", "Outbound calls by outcome (sent, retried, failed, expired)", ["kind", "outcome"],
            registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "feige_dead_letters", "Outbound calls put on a dead-letter list (refused, expired, irrelevant)",
            ["endpoint", "kind", "cause"], registry=r,
        )  # fmt: skip
        self.dead_events = Counter(
            "feige_dead_events", "Stored inbound events whose handling failed every attempt (a bug, unusable data)",
            ["endpoint", "tag"], registry=r,
        )  # fmt: skip
        self.redis_up = Gauge("feige_redis_up", "1 when Redis answered the last scrape, else 0", registry=r)
        self.events_backlog = Gauge(
            "feige_events_backlog", "Stored inbound events not handled yet (all endpoints)", registry=r
        )
        self.events_oldest_seconds = Gauge(
            "feige_events_oldest_seconds", "Age of the oldest stored event not handled yet (0: none)", registry=r
        )
        self.timers_overdue_seconds = Gauge(
            "feige_timers_overdue_seconds",
            "How late the most overdue timer is (outbox sends, windows, deadlines, archive copies; 0: none)",
            registry=r,
        )
        self.archived = Counter(
            "feige_archived", "Chats and task orders copied into the archive (once per change burst)", ["kind"],
            registry=r,
        )  # fmt: skip
        self.archive_failures = Counter(
            "feige_archive_failures", "Copies into the archive that failed and wait to be tried again", ["kind"],
            registry=r,
        )  # fmt: skip
        self.held = Counter(
            "feige_held_deliveries", "Deliveries held on local disk at a service's last try while Redis was down",
            registry=r,
        )  # fmt: skip
        self.held_moved = Counter(
            "feige_held_moved", "Held deliveries moved into the event log once Redis was back", registry=r
        )
        self.held_on_disk = Gauge(
            "feige_held_on_disk", "Deliveries this process holds on local disk now, waiting to be moved into Redis",
            registry=r,
        )  # fmt: skip


METRICS = Metrics()
