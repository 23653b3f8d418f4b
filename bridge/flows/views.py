"""What the flows show people, whatever the destination: who acted and where (``Actor``), the
views queued for a destination's thread (``post_view``), and a word only one person sees
(``tell_privately``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge.config import Destination, Store
from bridge.engine import keys
from bridge.engine.outbox import FinalFailure, Outbox, OutboxJob
from bridge.engine.timers import TimerChange
from bridge.flows import jobs
from bridge.i18n import t


@dataclass(frozen=True)
class Actor:
    """Who did something in a destination, and where to answer them privately."""

    service: str
    user: str
    channel: str
    thread: str | None = None
    message: str | None = None
    """The destination's id of the message they wrote (for a reaction)."""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}

    @staticmethod
    def reported(report: dict[str, Any]) -> Actor:
        """The actor a job's ``report_to`` names (``as_dict`` plus the store and locale)."""
        return Actor(str(report["service"]), str(report["user"]), str(report["channel"]), report.get("thread"),
                     report.get("message"))  # fmt: skip


@dataclass(frozen=True)
class ReplyMedia:
    service: str
    url: str
    name: str
    mimetype: str
    size: int


async def read_hash(redis: Redis, key: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in (await redis.hgetall(key)).items()}


async def post_view(
    outbox: Outbox,
    tag: str,
    thread_key: str,
    store_id: str | None,
    dest: Destination,
    job_id: str,
    action: str,
    view: dict[str, Any],
    root: bool = False,
    relevant_key: str | None = None,
    then: TimerChange | None = None,
    remember: bool = False,
    changes: str | None = None,
) -> dict[str, str]:
    """Queues a view for a destination: ``action`` is post, update_root or update_post;
    ``thread_key`` names what the messages belong to (``chat:<id>``, ``task:<id>``) under ``tag``;
    the root is its first post. ``store_id`` lets the renderer resolve agents' mentions (None for a
    creator's destination). A view with ``expires_at`` (a reminder) is dead-lettered rather than
    shown after that moment; ``relevant_key`` is the state of the chat or task order it belongs to
    (see ``OutboxJob``). ``remember``: a post whose place is recorded, so that a later update_post
    naming its ``job_id`` in ``changes`` shows a new view in it. ``then``: the timers the step
    changes after queueing it, in the same round trip; returns what that change reads
    (``Outbox.enqueue_then``)."""
    payload = {
        "tag": tag,
        "thread_key": thread_key,
        "store": store_id,
        "channel": dest.target,
        "view": view,
        "root": root,
    }
    if remember:
        payload["remember"] = True
    if changes is not None:
        payload["posted"] = _job_id(dest, changes)
    kind = jobs.destination(dest.service, action)
    job = OutboxJob(_job_id(dest, job_id), kind, payload, expires_at=view.get("expires_at"), relevant_key=relevant_key)
    if then is not None:
        return await outbox.enqueue_then(tag, f"{thread_key}:{dest.service}", job, then)
    await outbox.enqueue(tag, f"{thread_key}:{dest.service}", job)
    return {}


def remembered(job_id: str, view: dict[str, Any]) -> str:
    """What a flow keeps of a post it queued with ``remember`` (its job id and view): enough to
    ``retire`` it later."""
    return orjson.dumps({"job": job_id, "view": view}).decode()


async def retire(
    outbox: Outbox,
    tag: str,
    thread_key: str,
    store_id: str | None,
    dest: Destination,
    kept: str,
    why: str = "",
    relevant_key: str | None = None,
) -> None:
    """The post ``kept`` (``remembered``) keeps its text and loses its buttons: what they offered is
    past, and a tap on them would only be refused. ``why``: a line added under its text."""
    post = orjson.loads(kept)
    view = post["view"] | {"buttons": []}
    if why:
        view["text"] = f"{view['text']}\n\n{why}"
    await post_view(outbox, tag, thread_key, store_id, dest, f"{post['job']}:retired", jobs.UPDATE_POST, view,
                    relevant_key=relevant_key, changes=post["job"])  # fmt: skip


def _job_id(dest: Destination, job_id: str) -> str:
    """A destination job's id: the flow's name for it, under the destination's service."""
    return f"{dest.service}:{job_id}"


async def tell_privately(outbox: Outbox, store: Store, actor: Actor, text: str, job_id: str) -> None:
    """Only ``actor`` sees it where the destination allows (Slack ephemeral); else a reply to them."""
    await tell(outbox, keys.store_tag(store.id), actor, text, job_id)


def refusal_reason(locale: str, failure: FinalFailure) -> str:
    """What a person reads of the platform's final refusal of what they did: the platform's own
    words, unless its status says plainly what is wrong in words of their language."""
    if failure.status == 401:  # the store's (or creator's) token: nothing its author can mend
        return t(locale, "platform.reason.credentials")
    return failure.reason


async def react(outbox: Outbox, tag: str, actor: Actor, emoji: str, why: str) -> None:
    """A mark on the message ``actor`` wrote (its id in ``actor.message``): ``why`` names what it
    marks, so that one message can carry a mark for each."""
    payload = {"channel": actor.channel, "message": actor.message, "emoji": emoji}
    job = OutboxJob(f"{actor.service}:{why}-react:{actor.channel}:{actor.message}",
                    jobs.destination(actor.service, jobs.REACT), payload)  # fmt: skip
    await outbox.enqueue(tag, f"private:{actor.service}:{actor.user}", job)


async def tell(outbox: Outbox, tag: str, actor: Actor, text: str, job_id: str) -> None:
    """``tell_privately`` for an answer that belongs to ``tag`` (a creator's, or no one's)."""
    payload = {"actor": actor.as_dict(), "text": text}
    job = OutboxJob(f"{actor.service}:{job_id}", jobs.destination(actor.service, jobs.EPHEMERAL), payload)
    await outbox.enqueue(tag, f"private:{actor.service}:{actor.user}", job)
