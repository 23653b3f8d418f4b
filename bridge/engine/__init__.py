"""The engine: durable intake, the event log and its consumer, timers, the outbox, rate limits,
Redis connections and keys. It knows nothing of chats, task orders or any service."""
