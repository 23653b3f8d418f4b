"""Flow 2 — merchant–creator task orders (PRODUCT B1–B10), platform-neutral.

The merchant's team gets a card (issue type first) in the store's task-order destination; the
creator who raised it gets a confirmation with the deadline in theirs. Comments are replies under
either, carried to the platform and shown on the other side (10 per side while pending). The
deadline (B6) and its reminders are one timer per task order. Every operation is logged (B4);
task orders are kept and listed by status (B10).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from redis.asyncio import Redis

from bridge.archive.store import Archive, Snapshot, moment
from bridge.config import DEFAULT_TIMEZONE, BridgeConfig, Creator, Destination, Store, TaskOrderSettings
from bridge.engine import keys
from bridge.engine.clock import Clock
from bridge.engine.events import StoredEvent
from bridge.engine.outbox import FailureReporter, FinalFailure, Outbox, OutboxJob, Sender
from bridge.engine.timers import Timer, TimerStore
from bridge.flows import jobs
from bridge.flows.archiving import Read, Snapshots, archive_soon, decode_recorded, record
from bridge.flows.domain import TaskOrderComment, TaskOrderCreated, TaskOrderProcessed, TaskOrderTimedOut
from bridge.flows.steps import done_steps, take_steps
from bridge.flows.task_records import STATUSES, TaskRecords, outcome, status_name
from bridge.flows.views import Actor, post_view, react, read_hash, refusal_reason, tell_privately
from bridge.i18n import t
from rules.comments import COMMENTS_PER_SIDE, comment_refusal
from rules.deadline import deadline_basis, due_today, next_digest_at, task_deadline
from rules.evidence import evidence_count_refusal, evidence_limits, evidence_refusals
from rules.reply_window import WindowStep, next_step_at, window_steps

log = logging.getLogger(__name__)

DIGEST_BUTTONS = 5
"""Resolve buttons on a digest, for the first task orders due (a keyboard stays readable)."""


# KEYS: task, all index, pending index. ARGV: created (ms), deadline, data json, creator id.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'pending', 'created_at', ARGV[1], 'deadline', ARGV[2], 'data', ARGV[3],
           'creator', ARGV[4], 'comments:merchant', 0, 'comments:creator', 0)
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[5])
return 1
"""

# KEYS: task. ARGV: side, limit, comment id. Takes one comment slot, once per comment however often
# it is handled: returns the side's count with it (again for a repeat), or -1 when the task order is
# not pending, or -2 when the side's limit is reached.
_TAKE_COMMENT = """
local field, marker = 'comments:' .. ARGV[1], 'comment:' .. ARGV[3]
if redis.call('HEXISTS', KEYS[1], marker) == 1 then return tonumber(redis.call('HGET', KEYS[1], field)) end
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return -1 end
if tonumber(redis.call('HGET', KEYS[1], field) or '0') >= tonumber(ARGV[2]) then return -2 end
redis.call('HSET', KEYS[1], marker, 1, 'sent:' .. ARGV[3], ARGV[4])
return redis.call('HINCRBY', KEYS[1], field, 1)
"""

# KEYS: task. ARGV: side, comment id. A comment the platform already has (made on the platform and
# pushed to us): counted once, whatever the status or the count, since the platform took it.
_COUNT_COMMENT = """
local field, marker = 'comments:' .. ARGV[1], 'comment:' .. ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[1], marker) == 1 then return 0 end
redis.call('HSET', KEYS[1], marker, 1)
return redis.call('HINCRBY', KEYS[1], field, 1)
"""

# KEYS: task. ARGV: side, comment id. The platform refused a comment for good: its slot is free again.
_RELEASE_COMMENT = """
if redis.call('HDEL', KEYS[1], 'comment:' .. ARGV[2], 'sent:' .. ARGV[2]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], 'comments:' .. ARGV[1], -1)
"""

# KEYS: task, pending index, new status index. ARGV: status, task id, now, solution, operator name,
# operator id. Returns 1 if this call finished it, 0 if it was finished before (by this status or
# another). The solution is kept with the task order (B10: looked up and exported later).
_FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[3], 'solution', ARGV[4], 'operator', ARGV[5],
           'operator_id', ARGV[6])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'created_at'), ARGV[2])
return 1
"""

# Appends to the processing log once per entry id however often the step runs. KEYS: log.
# ARGV: entry id, entry JSON (which carries the id).
_LOG = """
for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if cjson.decode(e)['id'] == ARGV[1] then return 0 end
end
return redis.call('RPUSH', KEYS[1], ARGV[2])
"""

# A file shared under the card, kept once however often its message is handled (the same file
# shared again is the same evidence). KEYS: the task order's files. ARGV: the file as JSON.
_KEEP_FILE = """
if redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""


class TaskFlow:
    def __init__(
        self, redis: Redis, config: Any, timers: TimerStore, outbox: Outbox, clock: Clock, archive: Archive
    ) -> None:
        self.redis = redis
        self._config = config
        self.timers = timers
        self.outbox = outbox
        self.clock = clock
        self._create = redis.register_script(_CREATE)
        self._take_comment = redis.register_script(_TAKE_COMMENT)
        self._count_comment = redis.register_script(_COUNT_COMMENT)
        self._release_comment = redis.register_script(_RELEASE_COMMENT)
        self._finish = redis.register_script(_FINISH)
        self._append_log = redis.register_script(_LOG)
        self._keep_file = redis.register_script(_KEEP_FILE)
        self.records = TaskRecords(redis, config, archive)
        self.snapshots = Snapshots(self._snapshot_reads, self._snapshot_rows)
        """What the archive reads of a task order, and the rows it makes of it."""

    @property
    def config(self) -> BridgeConfig:
        cfg: BridgeConfig = self._config()
        return cfg

    # -- platform events -------------------------------------------------------------------------

    async def on_created(self, event: StoredEvent) -> None:
        order = TaskOrderCreated.model_validate_json(event.raw)
        store = self.config.store(order.shop_id)
        deadline = self._deadline(store, order)
        if event.endpoint.kind == "creator":
            creator = self.config.creator(event.endpoint.id)
            if creator is not None:
                index = keys.task_store(keys.creator_tag(creator.id), order.task_id)
                await self.redis.set(index, order.shop_id, ex=keys.REF_KEEP_SECONDS)
                view = self._confirm_view(creator, order, deadline)
                await self._to_creator(creator, order.shop_id, order.task_id, "confirm", "post", view, True)
            return
        if store is None:
            return
        tag = keys.store_tag(store.id)
        await self._create(
            keys=[
                keys.task(tag, order.task_id),
                keys.tasks_by_status(tag, "all"),
                keys.tasks_by_status(tag, "pending"),
            ],
            args=[int(order.created_at.timestamp() * 1000), deadline, event.raw, order.creator.id, order.task_id],
        )
        # Whether created now or by a run that died after it, the rest is done (once in effect).
        await self._log(tag, order.task_id, "created", "creator", order.creator.name or order.creator.id,
                        order.created_at.timestamp(), entry_id="created", operator_id=order.creator.id)  # fmt: skip
        task = await self._task(tag, order.task_id)
        if task.get("status") == "pending":
            steps = self._steps(store, order.created_at.timestamp(), float(task["deadline"]))
            first = next_step_at(steps, done_steps(task, "step:"))
            if first is not None:
                await self.timers.schedule(keys.deadline_timer(tag, order.task_id), first)
        await self._to_merchant(store, order.task_id, "card", "post", await self._card_view(store, order.task_id), True)

    def _deadline(self, store: Store | None, order: TaskOrderCreated) -> float:
        settings = _settings(store)
        return task_deadline(
            order.created_at,
            ZoneInfo(store.timezone if store else DEFAULT_TIMEZONE),
            hours=settings.deadline_hours,
            quiet_start=settings.quiet_hours.start,
            quiet_end=settings.quiet_hours.end,
            night_rule=settings.night_rule,
            platform_deadline=order.deadline_at,
        ).timestamp()

    def _steps(self, store: Store, created: float, deadline: float) -> list[Any]:
        # The exact span: a whole number of seconds would put the deadline up to a second early.
        return window_steps(created, max(1.0, deadline - created), store.task_orders.reminders_before)

    async def on_comment(self, event: StoredEvent) -> None:
        """A comment made on the platform itself (not through the bridge): counted against its side's
        limit (B5), logged, and shown on both sides. The store's push is the one taken (the creator's
        endpoint gets the same comment)."""
        comment = TaskOrderComment.model_validate_json(event.raw)
        store = self.config.store(comment.shop_id)
        if store is None or event.endpoint.kind != "store":
            return
        tag, tid, side = keys.store_tag(store.id), comment.task_id, comment.author.side
        comment_id = f"platform:{comment.comment_id}"
        if int(await self._count_comment(keys=[keys.task(tag, tid)], args=[side, comment_id])) < 0:
            return  # a task order the bridge never saw (created before it was connected)
        author = comment.author.name or comment.author.id
        said = {"at": comment.created_at.timestamp(), "side": side, "author": author, "author_id": comment.author.id,
                "text": comment.text}  # fmt: skip
        await record(self.redis, keys.task_comments(tag, tid), comment_id, said)
        await self._log(tag, tid, f"comment_{side}", side, author, comment.created_at.timestamp(),
                        entry_id=f"comment:{comment_id}", operator_id=comment.author.id)  # fmt: skip
        await self._show_comment(store, tid, side, author, comment.text, f"pc:{comment.comment_id}", both=True)

    async def on_processed(self, event: StoredEvent) -> None:
        done = TaskOrderProcessed.model_validate_json(event.raw)
        store = self.config.store(done.shop_id)
        if store is not None and event.endpoint.kind == "store":
            await self.finish(
                store,
                done.task_id,
                done.result,
                done.operator.name or done.operator.id,
                done.solution,
                operator_id=done.operator.id,
            )

    async def on_timeout(self, event: StoredEvent) -> None:
        timeout = TaskOrderTimedOut.model_validate_json(event.raw)
        store = self.config.store(timeout.shop_id)
        if store is not None and event.endpoint.kind == "store":
            await self.finish(store, timeout.task_id, "timed_out", "platform", "")

    # -- the morning digest ---------------------------------------------------------------------------

    async def schedule_digests(self) -> None:
        """Each store's next morning digest (at start and after a reload); scheduling again is
        harmless: the next one is the next one, and a digest is posted once a day."""
        for store in self.config.stores:
            tag = keys.store_tag(store.id)
            at = store.task_orders.digest_at
            if at is None:
                await self.timers.cancel(keys.digest_timer(tag))
                continue
            now = datetime.fromtimestamp(self.clock.now(), ZoneInfo(store.timezone))
            await self.timers.schedule(
                keys.digest_timer(tag), next_digest_at(now, ZoneInfo(store.timezone), at).timestamp()
            )

    async def on_digest_timer(self, timer: Timer) -> None:
        """The morning digest: the store's pending task orders due today, each with Resolve at hand."""
        _, tag, _ = keys.split_timer_key(timer.key)
        store = self.config.store(keys.store_of(tag) or "")
        if store is None or store.task_orders.digest_at is None:
            return
        tz, loc = ZoneInfo(store.timezone), store.locale
        now = datetime.fromtimestamp(self.clock.now(), tz)
        midnight = datetime.combine(now.date(), datetime.min.time(), tzinfo=tz)
        due = []
        for tid in await self.redis.zrange(keys.tasks_by_status(tag, "pending"), 0, -1):
            task = await self._task(tag, str(tid))
            deadline = datetime.fromtimestamp(float(task.get("deadline") or 0), tz)
            if task and due_today(deadline, midnight):
                due.append((deadline, str(tid), TaskOrderCreated.model_validate_json(task["data"]).issue_type))
        due.sort()
        date = now.strftime("%Y-%m-%d")
        if due:
            lines = [t(loc, "task.digest.title", date=date, count=len(due))]
            lines += [t(loc, "task.digest.line", task_id=tid, issue_type=kind, deadline=f"{at:%H:%M}")
                      for at, tid, kind in due]  # fmt: skip
            buttons = [_action(f"{t(loc, 'task.button.resolve')} {tid}", "task_resolve", "rs", tid)
                       for _, tid, _ in due[:DIGEST_BUTTONS]]  # fmt: skip
            view: dict[str, Any] = {"type": "notice", "text": "\n".join(lines), "buttons": buttons}
        else:
            view = {"type": "notice", "text": t(loc, "task.digest.none", date=date)}
        dest = Destination.parse(store.destinations.task_orders)
        # Its own thread per day: the job id makes it once a day, however often the timer fires.
        await post_view(self.outbox, tag, f"digest:{date}", store.id, dest, f"digest:{date}", jobs.POST, view, True)
        following = next_digest_at(now, tz, store.task_orders.digest_at)
        await self.timers.schedule(timer.key, following.timestamp())

    async def on_deadline_timer(self, timer: Timer) -> None:
        _, tag, tid = keys.split_timer_key(timer.key)
        store = self.config.store(keys.store_of(tag) or "")
        if store is None:
            return
        task = await self._task(tag, tid)
        if task.get("status") == "timed_out":
            # Timed out, yet its timer fired: the finish that cancels it died before its follow-ups.
            await self.finish(store, tid, "timed_out", "bridge", "")
            return
        if task.get("status") != "pending":
            return
        created, deadline = int(task["created_at"]) / 1000, float(task["deadline"])

        async def take(step: WindowStep) -> bool:
            if step.kind == "close":
                await self.finish(store, tid, "timed_out", "bridge", "")
                return False
            await self._remind(store, tid, task, step.seconds_left, deadline)
            return True

        steps = self._steps(store, created, deadline)
        await take_steps(self.timers, timer, keys.task(tag, tid), task, "step:", steps, take)

    async def _remind(self, store: Store, tid: str, task: dict[str, str], seconds_left: int, deadline: float) -> None:
        left = _left(store.locale, seconds_left)
        text = t(store.locale, "task.reminder", mention="{mention}", task_id=tid, left=left, deadline="{deadline}")
        view = {"type": "notice", "text": text, "deadline": deadline, "deadline_date": True, "timezone": store.timezone,
                "expires_at": deadline}  # fmt: skip
        # A task order has no assignee: its reminder mentions the main account, who answers for the
        # store by default (A2), so that it reaches someone rather than sitting in a thread.
        await self._to_merchant(store, tid, f"remind-{seconds_left}", "post", view | {"mentions": [store.main_account]})
        creator = self.config.creator(task.get("creator", ""))
        if creator is not None:
            left = _left(creator.locale, seconds_left)
            # The creator has nothing to do: it says whose the time is (the merchant's).
            creator_text = t(creator.locale, "task.reminder.creator", task_id=tid, left=left, deadline="{deadline}")
            await self._to_creator(creator, store.id, tid, f"remind-{seconds_left}", "post",
                                   view | {"text": creator_text, "timezone": creator.timezone})  # fmt: skip
        await self._log(keys.store_tag(store.id), tid, "reminder_sent", "bridge", "bridge",
                        entry_id=f"remind-{seconds_left}")  # fmt: skip

    async def finish(
        self, store: Store, tid: str, status: str, operator: str, solution: str, operator_id: str | None = None
    ) -> bool:
        """Processed (resolved / unresolvable) or timed out: idempotent, and resumable — a call for
        the status the task order already has finishes the follow-ups a crashed call may have left
        (each once). True only for the call that finished it."""
        tag = keys.store_tag(store.id)
        changed = await self._finish(
            keys=[keys.task(tag, tid), keys.tasks_by_status(tag, "pending"), keys.tasks_by_status(tag, status)],
            args=[status, tid, self.clock.now(), solution, operator, operator_id or ""],
        )
        task = await self._task(tag, tid)
        if task.get("status") != status:
            return False  # finished otherwise (the platform's result beat our deadline, or the reverse)
        forget_at = float(task.get("finished_at") or self.clock.now()) + keys.FINISHED_KEEP_SECONDS
        for endpoint_tag in (tag, keys.creator_tag(task.get("creator", ""))):  # ordering state, not the order
            await self.timers.schedule(keys.forget_timer(endpoint_tag, f"task:{tid}"), forget_at)
        await self._log(tag, tid, status, "merchant" if status != "timed_out" else "platform", operator,
                        entry_id=f"finish:{status}", operator_id=operator_id)  # fmt: skip
        order = TaskOrderCreated.model_validate_json(task["data"])
        await self._to_merchant(store, tid, f"card-{status}", "update_root", await self._card_view(store, tid))
        creator = self.config.creator(task.get("creator", ""))
        if status == "timed_out":
            await self._to_merchant(
                store,
                tid,
                "timed-out",
                "post",
                {"type": "notice", "text": t(store.locale, "task.timed_out", task_id=tid)},
            )
            if creator is not None:
                notice = {"type": "notice", "text": t(creator.locale, "task.timed_out", task_id=tid)}
                await self._to_creator(creator, store.id, tid, "timed-out", "post", notice)
        elif creator is not None:
            # B9: the consumer is not told automatically; the creator must, with Contact buyer.
            text = t(creator.locale, "task.result", task_id=tid, result=status_name(creator.locale, status),
                     solution=solution)  # fmt: skip
            button = {"label": t(creator.locale, "task.button.contact_buyer"), "url": order.buyer_chat_url}
            view = {"type": "notice", "text": text, "buttons": [button]}
            await self._to_creator(creator, store.id, tid, f"result-{status}", "post", view)
        # Last: when the deadline's own timer is finishing it, that timer is what retries this call.
        await self.timers.cancel(keys.deadline_timer(tag, tid))
        return bool(int(changed))

    # -- comments from destinations (B5) -----------------------------------------------------------

    async def comment(
        self, store: Store, tid: str, side: str, actor: Actor, author_id: str, author: str, text: str
    ) -> str | None:
        """A comment written under the task order by ``side``; None when it goes, else the refusal shown."""
        tag = keys.store_tag(store.id)
        task = await self._task(tag, tid)
        locale = store.locale if side == "merchant" else self._creator_locale(task)
        comment_id = f"{actor.service}:{actor.channel}:{actor.message}"
        taken = int(
            await self._take_comment(keys=[keys.task(tag, tid)], args=[side, COMMENTS_PER_SIDE, comment_id, text])
        )
        if taken < 0:
            status = task.get("status", "pending")
            refusal = comment_refusal(status, COMMENTS_PER_SIDE if taken == -2 else 0, COMMENTS_PER_SIDE)
            text_key = "task.refuse.limit" if refusal == "limit" else "task.refuse.closed"
            return t(locale, text_key, status=status_name(locale, status), limit=COMMENTS_PER_SIDE)
        endpoint = f"store:{store.id}" if side == "merchant" else f"creator:{task.get('creator', '')}"
        # Logged and shown to the other side only once the platform has it (B5): a follow-up job.
        accepted = {
            "store": store.id,
            "task_id": tid,
            "side": side,
            "author_id": author_id,
            "author": author,
            "text": text,
            "comment_id": comment_id,
            "shown_as": f"c:{actor.service}:{actor.message}",
            "actor": actor.as_dict(),
        }
        then = {
            "tag": tag,
            "thread": f"task:{tid}:bridge",
            "job": vars(OutboxJob(f"accepted:{comment_id}", jobs.COMMENT_ACCEPTED, accepted)),
        }
        job = OutboxJob(f"comment:{comment_id}", jobs.ADD_COMMENT,
                        {"endpoint": endpoint, "task_id": tid, "side": side, "author_id": author_id, "text": text,
                         "comment_id": comment_id},
                        report_to=actor.as_dict() | {"store": store.id, "locale": locale}, then=[then],
                        relevant_key=keys.task(tag, tid), relevant_grace=0.0)  # fmt: skip
        await self.outbox.enqueue(tag, f"task:{tid}:platform", job)
        return None

    async def on_comment_accepted(self, job: OutboxJob) -> None:
        """The platform took a comment written in a destination: logged, and shown to the other side."""
        p = job.payload
        store = self.config.store(str(p["store"]))
        if store is None:
            return
        tag, tid, side = keys.store_tag(store.id), str(p["task_id"]), str(p["side"])
        said = {"at": self.clock.now(), "side": side, "author": str(p["author"]), "author_id": str(p["author_id"]),
                "text": str(p["text"])}  # fmt: skip
        await record(self.redis, keys.task_comments(tag, tid), str(p["comment_id"]), said)
        await self._log(tag, tid, f"comment_{side}", side, str(p["author"]), entry_id=f"comment:{p['comment_id']}",
                        operator_id=str(p["author_id"]))  # fmt: skip
        await self._show_comment(store, tid, side, str(p["author"]), str(p["text"]), str(p["shown_as"]), both=False)
        if "actor" in p:  # (a job queued by an older release does not say where the comment was written)
            # Its author sees it went, as a reply's author does (✅): a refused one is told instead.
            await react(self.outbox, tag, Actor(**p["actor"]), "white_check_mark", "comment")

    async def _show_comment(
        self, store: Store, tid: str, side: str, author: str, text: str, job_id: str, both: bool
    ) -> None:
        tag = keys.store_tag(store.id)
        task = await self._task(tag, tid)
        if not task:
            return
        creator = self.config.creator(task.get("creator", ""))
        if side == "creator" or both:
            shown = t(store.locale, "task.comment", side=t(store.locale, f"task.side.{side}"), author=author, text=text)
            await self._to_merchant(store, tid, job_id, "post", {"type": "notice", "text": shown})
        if (side == "merchant" or both) and creator is not None:
            shown = t(
                creator.locale, "task.comment", side=t(creator.locale, f"task.side.{side}"), author=author, text=text
            )
            await self._to_creator(creator, store.id, tid, job_id, "post", {"type": "notice", "text": shown})

    # -- processing (B7, B8) -------------------------------------------------------------------------

    async def add_thread_file(self, store: Store, tid: str, media: dict[str, Any]) -> None:
        await self._keep_file(
            keys=[keys.task_files(keys.store_tag(store.id), tid)], args=[orjson.dumps(media).decode()]
        )

    async def thread_files(self, store: Store, tid: str) -> list[dict[str, Any]]:
        return [
            orjson.loads(raw) for raw in await self.redis.lrange(keys.task_files(keys.store_tag(store.id), tid), 0, -1)
        ]

    async def keep_draft(self, store: Store, tid: str, user: str, solution: str) -> None:
        """What ``user`` wrote as the solution of a processing that was refused after its form closed,
        to fill the form in when they open it again."""
        key = keys.task_draft(keys.store_tag(store.id), tid, user)
        await self.redis.set(key, solution, ex=keys.DRAFT_SECONDS)

    async def draft(self, store: Store, tid: str, user: str) -> str:
        return str(await self.redis.get(keys.task_draft(keys.store_tag(store.id), tid, user)) or "")

    async def status_of(self, store: Store, tid: str) -> str:
        return str(await self.redis.hget(keys.task(keys.store_tag(store.id), tid), "status") or "")

    async def process(
        self,
        store: Store,
        tid: str,
        result: str,
        solution: str,
        evidence: list[dict[str, Any]],
        operator: tuple[str, str],
        actor: Actor,
        action_id: str,
    ) -> None:
        """The merchant's decision, already checked against B7/B8: evidence is uploaded, then the task
        order processed on the platform; only when that succeeded is it finished here (B8: it never
        completes by itself)."""
        tag = keys.store_tag(store.id)
        done = {
            "store": store.id,
            "task_id": tid,
            "status": result,
            "operator": operator[1],
            "solution": solution,
            "operator_id": operator[0],
        }
        finish = {"tag": tag, "thread": f"task:{tid}:bridge",
                  "job": vars(OutboxJob(f"finish:{tid}", jobs.FINISH_TASK_ORDER, done))}  # fmt: skip
        payload = {"endpoint": f"store:{store.id}", "task_id": tid, "result": result, "solution": solution,
                   "operator_id": operator[0], "evidence": evidence}  # fmt: skip
        report = actor.as_dict() | {"store": store.id, "locale": store.locale}
        job = OutboxJob(f"process:{tid}:{action_id}", jobs.PROCESS_TASK_ORDER, payload, report_to=report,
                        then=[finish], relevant_key=keys.task(tag, tid), relevant_grace=0.0)  # fmt: skip
        if evidence:
            # Kept before the job is queued: a step run again after queueing it could otherwise log
            # the evidence after the platform's answer had already finished the task order.
            sent = [{"name": f.get("name", ""), "kind": str(f.get("mimetype", "")).partition("/")[0],
                     "size": int(f.get("size", 0))} for f in evidence]  # fmt: skip
            await record(self.redis, keys.task_evidence(tag, tid), action_id, {"files": sent})
            await self._log(tag, tid, "evidence_added", "merchant", f"{operator[1]} ({len(evidence)})",
                            entry_id=f"evidence:{action_id}", operator_id=operator[0])  # fmt: skip
        await self.outbox.enqueue(tag, f"task:{tid}:platform", job)

    def senders(self) -> dict[str, Sender]:
        """The flow's own follow-up jobs."""
        return {jobs.FINISH_TASK_ORDER: self.on_finish_job, jobs.COMMENT_ACCEPTED: self.on_comment_accepted}

    def failure_reporters(self) -> dict[str, FailureReporter]:
        return {jobs.ADD_COMMENT: self.on_platform_refused, jobs.PROCESS_TASK_ORDER: self.on_platform_refused}

    async def on_platform_refused(self, job: OutboxJob, failure: FinalFailure, tag: str) -> None:
        """The platform refused a comment or a processing for good: its author is told why."""
        report = job.report_to or {}
        store = self.config.store(str(report.get("store", "")))
        if store is None:
            return
        if job.kind == jobs.ADD_COMMENT and job.payload.get("comment_id"):
            # The comment does not exist: its side may write another in its place (B5 counts comments).
            task_key = keys.task(keys.store_tag(store.id), str(job.payload["task_id"]))
            await self._release_comment(keys=[task_key], args=[job.payload["side"], job.payload["comment_id"]])
        locale = str(report.get("locale") or store.locale)
        if job.kind == jobs.ADD_COMMENT and failure.status == 422:
            # The platform counted this side's comments at the limit before the bridge did (some made
            # on the platform, their pushes still on the way): the limit's own words (B5).
            text = t(locale, "task.refuse.limit", limit=COMMENTS_PER_SIDE)
        else:
            key = "task.comment_failed" if job.kind == jobs.ADD_COMMENT else "task.process_failed"
            # 409: processed or timed out on the platform, whose push has not arrived yet.
            reason = t(locale, "task.reason.finished") if failure.status == 409 else refusal_reason(locale, failure)
            text = t(locale, key, task_id=job.payload.get("task_id"), reason=reason)
        await tell_privately(self.outbox, store, Actor.reported(report), text, f"failed:{job.id}")

    # -- the archive ---------------------------------------------------------------------------------

    @staticmethod
    def _snapshot_reads(tag: str, tid: str) -> list[Read]:
        return [("hgetall", keys.task(tag, tid)), ("lrange", keys.task_log(tag, tid)),
                ("hgetall", keys.task_comments(tag, tid)), ("hgetall", keys.task_evidence(tag, tid))]  # fmt: skip

    def _snapshot_rows(self, tag: str, tid: str, found: list[Any]) -> Snapshot | None:
        """The task order as archive rows, its log, comments and evidence with it; None when its
        state is gone."""
        task, log_entries, kept_comments, kept_evidence = found
        if not task.get("data"):
            return None
        store = self.config.store(keys.store_of(tag) or "")
        order = TaskOrderCreated.model_validate_json(task["data"])
        ids = {"store_id": order.shop_id, "task_id": tid}
        deadline = float(task["deadline"])
        settings = _settings(store)
        basis = deadline_basis(order.created_at.timestamp(), deadline, settings.deadline_hours,
                               platform_set=order.deadline_at is not None)  # fmt: skip
        row = ids | {"creator_id": order.creator.id, "issue_type": order.issue_type, "order_id": order.order_id,
                     "created_at": order.created_at, "deadline_at": moment(deadline), "deadline_basis": basis,
                     "finished_at": moment(task.get("finished_at")), "data": orjson.loads(task["data"]),
                     "snapshot_at": int(self.clock.now() * 1000)} | outcome(task)  # fmt: skip
        log = [ids | {"entry_id": e["id"], "seq": seq, "at": moment(e["at"]), "type": e["type"], "side": e["side"],
                      "operator": e["operator"], "operator_id": e.get("operator_id")}
               for seq, e in enumerate(orjson.loads(raw) for raw in log_entries)]  # fmt: skip
        comments = [ids | {"comment_id": cid, "at": moment(c["at"]), "side": c["side"], "author": c["author"],
                           "author_id": c["author_id"], "text": c["text"]}
                    for cid, c in decode_recorded(kept_comments).items()]  # fmt: skip
        evidence = [ids | {"action_id": action_id, "position": i} | f
                    for action_id, sent in decode_recorded(kept_evidence).items()
                    for i, f in enumerate(sent["files"])]  # fmt: skip
        return {"task_orders": [row], "task_log": log, "task_comments": comments, "task_evidence": evidence}

    async def forget_state(self, tag: str, tid: str) -> None:
        """A finished, archived task order leaves Redis; lists and exports read the archive."""
        await self.redis.delete(keys.task(tag, tid), keys.task_log(tag, tid), keys.task_files(tag, tid),
                                keys.task_comments(tag, tid), keys.task_evidence(tag, tid))  # fmt: skip
        for status in ("all", *STATUSES):
            await self.redis.zrem(keys.tasks_by_status(tag, status), tid)

    async def on_finish_job(self, job: OutboxJob) -> None:
        p = job.payload
        store = self.config.store(str(p["store"]))
        if store is not None:
            await self.finish(
                store,
                str(p["task_id"]),
                str(p["status"]),
                str(p["operator"]),
                str(p["solution"]),
                operator_id=p.get("operator_id"),
            )

    # -- the processing log (B4) ---------------------------------------------------------------------

    async def _log(
        self,
        tag: str,
        tid: str,
        kind: str,
        side: str,
        operator: str,
        at: float | None = None,
        *,
        entry_id: str,
        operator_id: str | None = None,
    ) -> None:
        """Appends to the processing log (B4), once per ``entry_id`` however often the step runs: when,
        what, by whom (their name, and their platform account id where known)."""
        entry = {"id": entry_id, "at": at if at is not None else self.clock.now(), "type": kind, "side": side,
                 "operator": operator, "operator_id": operator_id}  # fmt: skip
        await self._append_log(keys=[keys.task_log(tag, tid)], args=[entry_id, orjson.dumps(entry).decode()])
        await archive_soon(self.timers, self.clock.now(), tag, f"task:{tid}")

    # -- views and destinations ---------------------------------------------------------------------

    async def _card_view(self, store: Store, tid: str) -> dict[str, Any]:
        task = await self._task(keys.store_tag(store.id), tid)
        order = TaskOrderCreated.model_validate_json(task["data"])
        loc, status = store.locale, task.get("status", "pending")
        fields = [
            (t(loc, "task.creator"), order.creator.name or order.creator.id),
            (t(loc, "task.order"), order.order_id),
            (t(loc, "task.product"), order.product.name),
            (t(loc, "task.suggestion"), order.creator_suggestion),
            (t(loc, "task.description"), order.consumer_description),
        ]
        if order.explanation_message:
            fields.append((t(loc, "task.explanation"), order.explanation_message))
        buttons = [
            {"label": t(loc, "task.button.contact_buyer"), "url": order.buyer_chat_url},
            {"label": t(loc, "task.button.share"), "url": order.share_url, "copy": True},
            _action(t(loc, "task.button.log"), "task_log", "log", tid),
        ]
        if status == "pending":
            buttons += [
                _action(t(loc, "task.button.comment"), "task_comment", "cm", tid),
                _action(t(loc, "task.button.resolve"), "task_resolve", "rs", tid),
                _action(t(loc, "task.button.unresolvable"), "task_unresolvable", "ur", tid),
            ]
        return {
            "type": "card",
            "title": t(loc, "task.title", issue_type=order.issue_type, task_id=tid),
            "status": status,
            "fields": fields,
            "status_line": t(loc, f"task.status.{status}", deadline="{deadline}"),
            "deadline": float(task["deadline"]),
            "deadline_date": True,
            "timezone": store.timezone,
            "buttons": buttons,
        }

    def _confirm_view(self, creator: Creator, order: TaskOrderCreated, deadline: float) -> dict[str, Any]:
        loc = creator.locale
        return {
            "type": "card",
            "title": t(loc, "task.title", issue_type=order.issue_type, task_id=order.task_id),
            "fields": [
                (t(loc, "task.order"), order.order_id),
                (t(loc, "task.product"), order.product.name),
                (t(loc, "task.deadline"), "{deadline}"),
            ],
            "status_line": t(loc, "task.confirm", deadline="{deadline}", limit=COMMENTS_PER_SIDE),
            "deadline": deadline,
            "deadline_date": True,
            "timezone": creator.timezone,
            "buttons": [
                {"label": t(loc, "task.button.share"), "url": order.share_url, "copy": True},
                _action(t(loc, "task.button.log"), "task_log", "log", order.task_id),
            ],
        }

    async def _to_merchant(
        self, store: Store, tid: str, name: str, action: str, view: dict[str, Any], root: bool = False
    ) -> None:
        dest = Destination.parse(store.destinations.task_orders)
        tag = keys.store_tag(store.id)
        await post_view(self.outbox, tag, f"task:{tid}", store.id, dest, f"task:{tid}:{name}", action, view, root,
                        keys.task(tag, tid))  # fmt: skip

    async def _to_creator(
        self,
        creator: Creator,
        store_id: str,
        tid: str,
        name: str,
        action: str,
        view: dict[str, Any],
        root: bool = False,
    ) -> None:
        dest = Destination.parse(creator.destination)
        view = {"locale": creator.locale} | view  # what a connector adds in words (a note, a label) in theirs
        await post_view(self.outbox, keys.creator_tag(creator.id), f"task:{tid}", None, dest, f"task:{tid}:{name}",
                        action, view, root, keys.task(keys.store_tag(store_id), tid))  # fmt: skip

    async def _task(self, tag: str, tid: str) -> dict[str, str]:
        return await read_hash(self.redis, keys.task(tag, tid))

    async def store_of_task(self, creator: Creator, tid: str) -> Store | None:
        """The store of a task order of ``creator`` in Redis (a creator's reply names only the task)."""
        store = self.config.store(str(await self.redis.get(keys.task_store(keys.creator_tag(creator.id), tid)) or ""))
        # Not known when the task order reached the creator before the bridge kept this: looked for.
        candidates = [store] if store is not None else self.config.stores
        for candidate in candidates:
            if await self.redis.exists(keys.task(keys.store_tag(candidate.id), tid)):
                return candidate
        return None

    def _creator_locale(self, task: dict[str, str]) -> str:
        creator = self.config.creator(task.get("creator", ""))
        return creator.locale if creator else "zh-CN"


def evidence_count_problem(locale: str, count: int) -> str:
    """B7's count, which is known before any file is looked at; empty when it is within bounds."""
    refusal = evidence_count_refusal(count)
    return t(locale, "task.process.too_many", count=count, limit=refusal.limit) if refusal else ""


def evidence_problems(locale: str, files: list[tuple[str, bytes, int]]) -> str:
    """B7, before anything is sent, whatever the destination: at most 6 files, each allowed by its
    leading bytes and size. ``files`` are (name, leading bytes, size); the answer names every file
    refused and why, or is empty."""
    lines = []
    for index, refusal in evidence_refusals([(head, size) for _, head, size in files]):
        if index < 0:
            return evidence_count_problem(locale, len(files))
        limit_mb = (refusal.limit or 0) // (1024 * 1024)
        reason = t(locale, f"task.process.reason.{refusal.reason}", **(evidence_limits() | {"limit_mb": limit_mb}))
        lines.append(t(locale, "task.process.bad_file", name=files[index][0], reason=reason))
    return "\n".join(lines)


def _settings(store: Store | None) -> TaskOrderSettings:
    """A store's task-order settings; the defaults for a task order of a store no longer configured."""
    return store.task_orders if store else TaskOrderSettings()


def _left(locale: str, seconds: int) -> str:
    """Time left, as the reader's language says it (2 小时, 30 min)."""
    if seconds >= 3600:
        return t(locale, "duration.hours", n=seconds // 3600)
    return t(locale, "duration.minutes", n=seconds // 60)


def _action(label: str, action: str, short: str, tid: str) -> dict[str, str]:
    """A button that acts on the task order: ``action`` names what it does and ``value`` carries the
    task id; ``short`` is a compact name for destinations whose button data is small (Telegram's
    callback data is at most 64 bytes)."""
    return {"label": label, "action": action, "value": tid, "short": short}
