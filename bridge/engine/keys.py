"""Every Redis key the bridge uses, with its type and lifetime.

Cluster layout: all keys of one store share the hash tag ``{store:<id>}`` (one creator:
``{creator:<id>}``) so a Lua script touching several of them runs on one node. The timer index is
the one structure shared by all stores; it is split into ``shards`` hash-tagged ``{timers:<n>}`` so
it can spread over a cluster, and a timer lives in the shard its key hashes to.

A timer is identified by a short *timer key*, ``<kind>:<tag>:<id>`` (for example
``window:{store:1001}:conv-9``). The kind selects the handler; the rest names the domain object whose
state lives in the store's own keys. Keeping the timer this small is what holds a pending timer near
150 bytes of Redis memory (bench/timers.py measures it).
"""

from __future__ import annotations

import zlib

EVENTS_WAKE_CHANNEL = "events:wake"
"""Pub/sub channel, Redis Cluster only: intake stored events; consumers read the streams now
(on one server they wait on EVENTS_READY_WAKE instead)."""

EVENTS_READY = "events:ready"
"""SET, one server only: the event streams that may hold entries no consumer has read. Intake adds
a stream with each write; the read that takes a stream's last unread entries takes it out, in the
same script. So a read names only the streams with new events, not every configured store's (at
1,000 stores a read naming them all cost 0.5 ms of Redis CPU and 0.4 ms of the bridge's)."""

EVENTS_READY_WAKE = "events:ready-wake"
"""LIST, one server only: a stream's name for each write of intake (the newest READY_WAKE_KEPT);
a consumer with nothing to do waits on it (BLMPOP, one at a time) and its read follows in the same
round trip; a read that leaves nothing listed drops it."""

READY_WAKE_KEPT = 1000

WAKE_CHANNEL = "timers:wake"
"""Pub/sub channel. Payload: the due time (ms) of a timer scheduled earlier than its shard's head,
so every sleeping worker wakes early. Nothing is stored."""


def store_tag(store_id: str) -> str:
    return "{store:" + store_id + "}"


def store_of(tag: str) -> str | None:
    """The store id a tag names (``{store:1001}`` → ``1001``); None for any other tag."""
    return tag[len("{store:") : -1] if tag.startswith("{store:") and tag.endswith("}") else None


def creator_tag(creator_id: str) -> str:
    return "{creator:" + creator_id + "}"


def timer_shard(timer_key: str, shards: int) -> int:
    return zlib.crc32(timer_key.encode()) % shards


TIMER_LANES = ("archive",)
"""Timer kinds with a due set of their own in each shard (a *lane*). A worker claims a lane's timers
only while it runs fewer than the lane's limit of them (TimerWorker ``lanes``); the rest wait there,
due and untouched, instead of being claimed and put back, and never take the slots of other kinds."""


def timer_lane(timer_key: str) -> str:
    """The lane a timer's due time is kept in: its kind when that has a lane, else the main one ("")."""
    kind = timer_key.split(":", 1)[0]
    return kind if kind in TIMER_LANES else ""


def timers_due(shard: int, lane: str = "") -> str:
    """ZSET member=timer key, score=due time (epoch ms). A member stays until claimed or cancelled.
    One per lane (``timers:{<n>}:due:<lane>``; the main lane has no suffix)."""
    return f"timers:{{{shard}}}:due" + (f":{lane}" if lane else "")


def timers_due_sets(shard: int) -> list[str]:
    """Every due set of the shard: the main lane's, then each of ``TIMER_LANES``."""
    return [timers_due(shard, lane) for lane in ("", *TIMER_LANES)]


def timers_leased(shard: int) -> str:
    """ZSET member=timer key, score=lease expiry (epoch ms). A member stays while a worker runs its
    handler; an expired score means the worker died and the timer is claimed again."""
    return f"timers:{{{shard}}}:leased"


def timers_payload(shard: int) -> str:
    """HASH field=timer key, value=optional payload. A field lives exactly as long as its timer."""
    return f"timers:{{{shard}}}:payload"


def timers_attempts(shard: int) -> str:
    """HASH field=timer key, value=failed handler runs so far. Removed on success or when dead."""
    return f"timers:{{{shard}}}:attempts"


def timers_dead(shard: int) -> str:
    """ZSET member=timer key, score=when it was given up (epoch ms), after its handler failed
    ``max_attempts`` times. Kept until an operator looks; never fired again by itself."""
    return f"timers:{{{shard}}}:dead"


def demo_timer(store_id: str, name: str) -> str:
    """Timer key of the demo's heartbeat timers (kind ``demo``)."""
    return f"demo:{store_tag(store_id)}:{name}"


# -- inbound events (per store or creator; ``tag`` is Endpoint.tag) ------------------------------

EVENTS_GROUP = "bridge"
"""The consumer group every bridge process reads the event streams with."""

SEEN_SECONDS = 7 * 24 * 3600
"""A push's msg_id is remembered this long (PLATFORM-API: ≥ 7 days); it is the replay protection."""


def events(tag: str) -> str:
    """STREAM of stored inbound events: msg_id, tag, thread, seq, data, received_at. An entry is
    deleted once handled (XACK + XDEL), so the stream holds only the backlog."""
    return f"{tag}:events"


def seen(tag: str) -> str:
    """ZSET member=msg_id, score=when stored (ms): deduplication of redeliveries. Members older than
    SEEN_SECONDS are trimmed by each write. One key per endpoint keeps a push's script at three keys."""
    return f"{tag}:seen"


def thread_seq(tag: str) -> str:
    """HASH thread → sequence number of its last stored event. A thread's field is removed by its
    ``forget`` timer, once every stored event of it was handled."""
    return f"{tag}:thread-seq"


def thread_done(tag: str) -> str:
    """HASH thread → sequence number of its last handled event; an event runs only after its
    predecessor, and never again once handled. Removed with the thread's ``thread_seq`` field."""
    return f"{tag}:thread-done"


def forget_timer(tag: str, thread: str) -> str:
    """Timer key (kind ``forget``): a finished thread's ordering fields are removed when it fires
    (FINISHED_KEEP_SECONDS after a chat closed or a task order finished), so they do not pile up; on a
    store's tag it also removes the chat's or task order's own state, once archived."""
    return f"forget:{tag}:{thread}"


def thread_locks(tag: str) -> str:
    """HASH thread → "<owner>|<expiry ms>": a consumer is handling this thread's next event. A field
    lives while its event is handled; an expired one (its consumer died) is taken over."""
    return f"{tag}:thread-locks"


def events_dead(tag: str) -> str:
    """LIST of events whose handler failed every attempt (JSON {msg_id, tag, thread, data,
    received_at, at, error}), oldest first. Kept until an operator replays or drops them
    (``bridge dead-events``)."""
    return f"{tag}:events-dead"


def events_dead_ids(tag: str) -> str:
    """HASH msg_id → 1 of the events in ``events_dead``: an event is put there once however often
    it fails for good (a process that gave up on it may die before acknowledging it). A replay or a
    drop takes the id out."""
    return f"{tag}:events-dead-ids"


# -- outbox -------------------------------------------------------------------------------------


def outbox_queue(tag: str, thread: str) -> str:
    """LIST of pending outbound calls of one thread (JSON jobs), sent strictly in order. Empty
    lists vanish by themselves."""
    return f"{tag}:outbox:{thread}"


def outbox_job(tag: str, job_id: str) -> str:
    """STRING, TTL OUTBOX_JOB_TTL_SECONDS: this action id was enqueued (never enqueued twice)."""
    return f"{tag}:outbox-job:{job_id}"


OUTBOX_JOB_TTL_SECONDS = 7 * 24 * 3600


def outbox_attempts(tag: str) -> str:
    """HASH job id → failed attempts so far; the field goes when the job does."""
    return f"{tag}:outbox-attempts"


def dead_letters(tag: str) -> str:
    """LIST of outbound calls that failed for good or stopped mattering before they could be sent
    (JSON {id, thread, reason, status, at, job}), oldest first. Kept until an operator replays or
    drops them (``bridge dead-letters``)."""
    return f"{tag}:dead-letters"


def dead_letter_ids(tag: str) -> str:
    """HASH job id → 1 of the jobs in ``dead_letters``: a job is dead-lettered once however often
    the step that gives up on it runs (a doubled letter would be sent twice by a replay of all).
    A replay or a drop takes the id out, so the job may die again."""
    return f"{tag}:dead-letter-ids"


def dead_letter_replays(tag: str) -> str:
    """HASH job id → thread of the dead letters a replay has queued again and whose thread's sender
    it has not yet made sure of: a replay stopped there finishes them when it runs again."""
    return f"{tag}:dead-letter-replays"


def outbox_timer(tag: str, thread: str) -> str:
    """Timer key (kind ``outbox``) that sends the head of one thread's queue when due."""
    return f"outbox:{tag}:{thread}"


def split_timer_key(timer_key: str) -> tuple[str, str, str]:
    """``<kind>:<tag>:<rest>`` → (kind, tag, rest); e.g. ``window:{store:1001}:conv-9`` →
    ("window", "{store:1001}", "conv-9")."""
    kind, tail = timer_key.split(":", 1)
    end = tail.index("}") + 1
    return kind, tail[:end], tail[end + 1 :]


# -- platform chats (flow 1) ------------------------------------------------------------------

FINISHED_KEEP_SECONDS = 7 * 24 * 3600
"""A closed chat's or finished task order's state stays in Redis this long after it finished (a late
event, an edit, a click on an old button is still recognised), then goes once it is archived: the
archive keeps it for good, Redis holds live work only."""


def chat(tag: str, conversation_id: str) -> str:
    """HASH: one platform chat's state (status, assignee, window, first reply, close, the Reassign…
    menu posted last). Removed FINISHED_KEEP_SECONDS after it closed, once archived."""
    return f"{tag}:chat:{conversation_id}"


def agent_load(tag: str) -> str:
    """HASH agent id → open platform chats assigned to them (A3). Lives as long as the store."""
    return f"{tag}:agent-load"


def window_timer(tag: str, conversation_id: str) -> str:
    """Timer key (kind ``window``): the next reminder or the close of a chat's reply window."""
    return f"window:{tag}:{conversation_id}"


def chat_messages(tag: str, conversation_id: str) -> str:
    """HASH message id → JSON {at, direction, author, author_id, kind, text}: the chat's messages
    both ways, for the archive. Removed with the chat."""
    return f"{tag}:chat-messages:{conversation_id}"


def archive_timer(tag: str, thread: str) -> str:
    """Timer key (kind ``archive``): copy a chat (``chat:<id>``) or task order (``task:<id>``) into
    the archive. Scheduled a moment after each change, keeping an earlier time: many changes, one copy."""
    return f"archive:{tag}:{thread}"


REF_KEEP_SECONDS = FINISHED_KEEP_SECONDS
"""How long the bridge remembers where a thread's messages landed: far past a chat's minutes and a
task order's day, so a late reply is still recognised (and refused as closed)."""


def thread_root(tag: str, thread_key: str) -> str:
    """STRING "<service>:<channel>:<message>": where a thread's (``chat:<id>``, ``task:<id>``) first
    message landed in its destination, to thread under it and update it. Expires after REF_KEEP_SECONDS."""
    return f"{tag}:root:{thread_key}"


def thread_topic(tag: str, thread_key: str) -> str:
    """STRING: the destination's own sub-thread opened for a thread (a forum topic's id).
    Expires after REF_KEEP_SECONDS."""
    return f"{tag}:topic:{thread_key}"


def message_ref(tag: str, ref: str) -> str:
    """STRING thread key: the thread a destination message (``<service>:<channel>:<message>``, or
    ``…:topic:<id>``) belongs to, to route a reply to it. Expires after REF_KEEP_SECONDS."""
    return f"{tag}:ref:{ref}"


def posted_message(tag: str, job_id: str) -> str:
    """STRING "<service>:<channel>:<message>": where the post of outbox job ``job_id`` landed, for a
    post queued to be changed later (a guided step's question or a Reassign… menu, its buttons
    retired once they are past).
    Expires after REF_KEEP_SECONDS."""
    return f"{tag}:posted:{job_id}"


def rate_limit(service: str, target: str, *, sender_wide: bool = False) -> str:
    """STRING: the earliest time (ms) the next slot to ``target`` on ``service`` is free. Expires a
    minute after that time. ``sender_wide``: the service also spaces the sender as a whole, and
    all its targets share one hash tag, so one script can reserve a target and the sender."""
    return "{rl:" + service + "}:" + target if sender_wide else "{rl:" + service + ":" + target + "}"


def rate_limit_last(target_key: str) -> str:
    """STRING: when (ms) the last message to a target (its ``rate_limit`` key) was let go (or,
    after a 429, the moment the service allows again, less one spacing). Expires a minute after it
    matters."""
    return target_key + ":last"


def rate_limit_slot(target_key: str, job_id: str) -> str:
    """STRING: the slot (ms) reserved for one outbox job; deleted when used, else expires."""
    return target_key + ":slot:" + job_id


NO_ENDPOINT_TAG = "{no-endpoint}"
"""The tag of outbox threads that belong to no store or creator (a destination's answers to
commands and reactions in chats it knows only by id)."""


# -- task orders (flow 2) ---------------------------------------------------------------------


def task(tag: str, task_id: str) -> str:
    """HASH: one task order's state (status, deadline, comment counts, the order's data as JSON).
    Removed FINISHED_KEEP_SECONDS after it finished, once archived (the archive keeps it for good, B10)."""
    return f"{tag}:task:{task_id}"


def task_store(creator_tag: str, task_id: str) -> str:
    """STRING: the id of the store a creator's task order belongs to, set when it reaches the
    creator, so that a comment in the creator's thread finds its store in one lookup. Expires with
    the refs of the thread (REF_KEEP_SECONDS), after which nothing in it is recognised anyway."""
    return f"{creator_tag}:task-store:{task_id}"


def task_log(tag: str, task_id: str) -> str:
    """LIST of JSON entries {id, at, type, side, operator, operator_id}: the processing log (B4).
    Removed with the task order."""
    return f"{tag}:task-log:{task_id}"


def tasks_by_status(tag: str, status: str) -> str:
    """ZSET member=task id, score=created (ms): a store's task orders in Redis of one status; ``all``
    holds every one. A task order leaves it when its state is removed (lists read the archive)."""
    return f"{tag}:tasks:{status}"


def deadline_timer(tag: str, task_id: str) -> str:
    """Timer key (kind ``deadline``): a task order's next reminder or its deadline (B6)."""
    return f"deadline:{tag}:{task_id}"


def digest_timer(tag: str) -> str:
    """Timer key (kind ``digest``): a store's next morning digest of the task orders due that day."""
    return f"digest:{tag}:daily"


def task_files(tag: str, task_id: str) -> str:
    """LIST of JSON {service, url, name, mimetype, size}: files the merchant shared in a task order's
    thread, offered as evidence when it is processed. Removed with the task order."""
    return f"{tag}:task-files:{task_id}"


def task_comments(tag: str, task_id: str) -> str:
    """HASH comment id → JSON {at, side, author, author_id, text}: comments the platform has (both
    sides), for the archive. Removed with the task order."""
    return f"{tag}:task-comments:{task_id}"


def task_evidence(tag: str, task_id: str) -> str:
    """HASH processing action id → JSON list of {name, kind, size}: the evidence sent with it (B7),
    for the archive. Removed with the task order."""
    return f"{tag}:task-evidence:{task_id}"


def task_draft(tag: str, task_id: str, user: str) -> str:
    """STRING: the solution a person wrote in a processing form whose evidence was refused after the
    form had closed (a modal's files are read once it is submitted); the form opens with it again.
    Expires after ``DRAFT_SECONDS``."""
    return f"{tag}:task-draft:{task_id}:{user}"


DRAFT_SECONDS = 3600


def task_resolve(tag: str, task_id: str, user: str) -> str:
    """HASH: a guided resolve conversation (for destinations without modals) of one person on one
    task order: result, step, solution, files (JSON), its latest question, when its last step came.
    Ended an hour after the last step by its timer (``resolve_timer``), and kept a day past that at
    most; nothing is sent until confirmed."""
    return f"{tag}:task-resolve:{task_id}:{user}"


def resolve_timer(tag: str, task_id: str, user: str) -> str:
    """Timer key (kind ``resolve``): ends a guided resolve conversation left without a step for its
    time (its question's buttons retired, its state removed)."""
    return f"resolve:{tag}:{task_id}:{user}"
