"""The durable outbox (PRODUCT C3): every outbound call of the bridge goes through it.

Jobs are queued per *thread* (one chat, one task order, one Slack channel thread…) in a Redis list
and sent strictly in order: the head of a queue is sent by a timer (kind ``outbox``), so sending
shares the timer engine's leases, fail-over and instant wake-ups. A retryable failure reschedules the
same head later (capped exponential backoff with jitter, or exactly the service's ``Retry-After``),
which holds the rest of its thread back and keeps order. It never gives up on a message that still
matters: a job is retried for as long as it is *relevant* — a reminder until its moment
(``expires_at``), a chat's or task order's messages while that chat or task order is live and for
a grace period after it finished (``relevant_key``, ``relevant_grace``). What is no longer relevant,
or fails with a final error, goes to its endpoint's dead-letter list with the reason, where an
operator lists, replays or drops it (``bridge dead-letters``); a final failure is also reported to
whoever acted. A job id is the action's stable id: enqueueing it twice does nothing, and senders
pass it on as the idempotency key so a retry after a crash is not a second action. What a send
learned (where its message landed) is recorded in the call that takes the job off its queue, so a
job is either still queued or done with and recorded.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.engine import keys
from bridge.engine.clock import Clock, SystemClock
from bridge.engine.cluster import is_cluster
from bridge.engine.deadlist import DeadList
from bridge.engine.logcontext import about, bound
from bridge.engine.metrics import METRICS
from bridge.engine.scripts import ScriptCall, in_one_call
from bridge.engine.timers import Timer, TimerChange, TimerStore, TimerWorker, settle_lua, take_lua

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Transient: 5xx, timeouts, 429. ``after`` is the service's own wait (Retry-After), if any.
    ``pacing`` marks our own rate spacing: not a failure, so no attempt is counted and no backoff
    is added — the job simply goes when its slot comes."""

    def __init__(self, reason: str, after: float | None = None, *, pacing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after
        self.pacing = pacing


class WaitingForRoot(RetryLater):
    """A post into a thread whose first message (its root) has not landed yet. When the root's own
    job is queued behind it in the same thread (the events that made them were handled in the other
    order), the root goes first; otherwise the post waits for it like any retry."""

    def __init__(self) -> None:
        super().__init__("waiting for the thread's first message to be posted")


class FinalFailure(Exception):
    """Will never succeed as it is (a 4xx other than 429): reported to the person who acted."""

    def __init__(self, reason: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code


class Expired(Exception):
    """The job's moment (``expires_at``) will have passed before the service can take it: dropped."""


@dataclass(frozen=True)
class OutboxJob:
    id: str
    """Stable id of the action (e.g. ``reply:<slack ts>``): deduplication and idempotency key."""
    kind: str
    """Selects the sender, e.g. ``platform.send_message``."""
    payload: dict[str, Any]
    report_to: dict[str, Any] | None = None
    """Who to tell if it fails for good (used by the flows); None: only logged."""
    created_at: float = 0.0
    then: list[dict[str, Any]] | None = None
    """Jobs to enqueue once this one succeeded: {"tag", "thread", "job"} (e.g. a ✅ after a reply
    reached the platform)."""
    expires_at: float | None = None
    """After this moment the job is worth nothing (a reminder once the window has closed): dead-
    lettered instead of sent late, when a rate limit or an outage held it back."""
    relevant_key: str | None = None
    """The state hash (a chat's, a task order's) whose life this job shares: it is retried while
    that hash's ``status`` is live (``LIVE_STATUSES``) and for ``relevant_grace`` seconds after its
    ``finished_at``. None: relevant until delivered (or until ``expires_at``)."""
    relevant_grace: float | None = None
    """Seconds after it finished that the job still matters; None: the outbox's ``finished_grace``."""

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def dumps(self) -> str:
        # vars(), not asdict(): the payload is plain JSON data already, so no deep copy is needed.
        return orjson.dumps(vars(self)).decode()

    @staticmethod
    def loads(raw: str) -> OutboxJob:
        return OutboxJob(**orjson.loads(raw))


LIVE_STATUSES = ("open", "pending")
"""A chat is ``open``, a task order ``pending`` until it is finished."""

FINISHED_GRACE_SECONDS = 24 * 3600.0
"""A chat's or task order's messages to a destination are still delivered this long after it
finished (its close notice after an outage); past that they are dead letters, replayable."""

CALL_TIMEOUT_SECONDS = 30  # whole seconds: slack_sdk takes an int
"""The longest a sender's client waits for a service's answer to one call before the call counts as
failed and is retried (a service may have taken it: senders find it before sending again). The
connectors give it to their clients, or use shorter ones."""

MAX_RETRY_DELAY_SECONDS = 60.0
"""However long an outage lasts, a message is tried again at least once a minute."""

Recorded = Mapping[str, str]
"""What a send learned that later work needs (where the message landed: ``refs``), as keys under the
job's own tag and their values. The outbox sets them, kept ``keys.REF_KEEP_SECONDS``, in the call
that takes the job off its queue: recorded exactly when the job is done with."""
Sender = Callable[[OutboxJob], Awaitable[Recorded | None]]
FailureReporter = Callable[[OutboxJob, FinalFailure, str], Awaitable[None]]
"""Called with the job, the failure and the tag of its endpoint when a job fails for good."""

# KEYS: queue, job marker.  ARGV: job json, marker ttl.
# Returns the queue length after the push, negated when the job was already enqueued before.
_PUSH = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  return -redis.call('LLEN', KEYS[1])
end
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
"""
_ENQUEUE = _PUSH + "return n\n"

# As _ENQUEUE; a job that finds its queue empty also leases the thread's sender to the caller, which
# runs it at once (start_now's work, in the same call). KEYS 3–6: the sender timer's shard keys;
# ARGV 3–4: the sender timer, the lease (ms). One Redis only: on a cluster the timers' keys are in
# slots of their own, and the two are separate calls.
_ENQUEUE_AND_TAKE = _PUSH + "if n == 1 then\n" + take_lua(3, 3) + "end\nreturn n\n"

# KEYS: queue. Moves the first job that opens the thread (payload.root) to the head. Returns 1 when
# one was moved. Only the thread's sender runs it (it holds the thread's timer lease).
_ROOT_FIRST = """
local queued = redis.call('LRANGE', KEYS[1], 1, -1)
for _, raw in ipairs(queued) do
  local payload = cjson.decode(raw)['payload']
  if type(payload) == 'table' and payload['root'] == true then
    redis.call('LREM', KEYS[1], 1, raw)
    redis.call('LPUSH', KEYS[1], raw)
    return 1
  end
end
return 0
"""


def _pop_lua(first_record_key: int, first_record_arg: int) -> str:
    """Lua that removes the head of the queue (KEYS[1]) if it is still the job ARGV[1], forgetting
    its attempts (KEYS[2]), and sets what its send recorded: KEYS from ``first_record_key`` to the
    values in ARGV from ``first_record_arg`` + 1, each kept ARGV[``first_record_arg``] seconds."""
    shift = first_record_arg + 1 - first_record_key  # from a record's key to its value
    value = f"ARGV[i {'+' if shift >= 0 else '-'} {abs(shift)}]"
    return f"""
local head = redis.call('LINDEX', KEYS[1], 0)
if head and cjson.decode(head)['id'] == ARGV[1] then
  redis.call('LPOP', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
for i = {first_record_key}, #KEYS do
  redis.call('SET', KEYS[i], {value}, 'EX', ARGV[{first_record_arg}])
end
"""


# An operator's replay of one dead letter, all or nothing, so a replay stopped anywhere and run again
# queues each letter once: the letter and its id go, the job is marked queued and pushed at the end
# of its thread's queue, and the replay notes the thread until it has made sure of its sender.
# KEYS: dead letters, their ids, the thread's queue, the job's marker, the replays. ARGV: the letter
# as stored, job id, the job to queue, the marker's life (s), thread. Returns the queue's length
# after the push, or 0 when the letter is no longer there (replayed or dropped meanwhile).
_REPLAY_LETTER = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('SET', KEYS[4], '1', 'EX', ARGV[4])
redis.call('HSET', KEYS[5], ARGV[2], ARGV[5])
return redis.call('RPUSH', KEYS[3], ARGV[3])
"""

# KEYS: queue, attempts, then the records.  ARGV: job id, the records' life (s), then their values.
# Returns the new head (false when the queue is empty).
_POP_HEAD = _pop_lua(3, 2) + "return redis.call('LINDEX', KEYS[1], 0)\n"

# As _POP_HEAD; when the queue is left empty, also acknowledges the sender's run (KEYS 3–6: the
# sender timer's due, leased, payload and attempts; ARGV 2–3: the timer, the run's lease), which
# would otherwise be a call of its own. KEYS from 7: the records; ARGV 4: their life, then their
# values. Returns {new head or '', 1 when the run was acknowledged}. One Redis only, as
# _ENQUEUE_AND_TAKE.
_POP_HEAD_AND_SETTLE = (
    _pop_lua(7, 4)
    + """head = redis.call('LINDEX', KEYS[1], 0)
if head then return {head, 0} end
local settled = false
"""
    + settle_lua("redis.call('ZSCORE', KEYS[3], ARGV[2])", "KEYS[4]", "KEYS[5]", "KEYS[6]", "ARGV[2]", "ARGV[3]")
    + "return {'', settled and 1 or 0}\n"
)

FAILURES_BEFORE_REST = 3
"""Calls to one service failing in a row (5xx, timeouts; not 429s, which carry their own wait)
before its sends rest: while it is down, one call at a time checks whether it is back, instead of
every queued thread retrying on its own. The threads of the services that answer go on."""


@dataclass
class _Rest:
    """A service's run of failures in this process, and the rest they called for."""

    failures: int = 0
    until: float = 0.0
    probing: bool = False

    @property
    def resting(self) -> bool:
        return self.failures >= FAILURES_BEFORE_REST


TAKEN_OVER_GRACE_SECONDS = 1.0
"""A thread's sender taken over from a run whose lease lapsed waits this long before it sends: that
run may be alive, cut off from Redis after a message went out and trying four times a second to
take it off the queue (``RECORDING_A_SEND``), and would do so as soon as Redis is back. A dead
run's thread goes on this much later."""

JOBS_PER_RUN = 20
"""A thread's sender goes on to the next queued job in the same run (no timer round trip between
them) up to this many, then hands the rest to a new run so other threads get their turn."""


class _AtOnceThenExponential(ExponentialBackoff):
    """The first retry at once (the client's own reconnection already waited), then doubling. (It
    needs redis-py 8.2: 8.1's doubling overflowed after about 1,000 failures, some four minutes of
    an outage for ``RECORDING_A_SEND``, and ended the retry that has no limit.)"""

    def compute(self, failures: int) -> float:
        return 0.0 if failures <= 1 else super().compute(failures - 1)


_Recorded = TypeVar("_Recorded")

RECORDING_A_SEND = Retry(
    _AtOnceThenExponential(cap=0.25, base=0.05), retries=-1, supported_errors=(RedisConnectionError, RedisTimeoutError)
)
"""How a job that went out is taken off its queue when Redis is unreachable at that moment (restarted,
failing over: a Sentinel failover takes 30 s and more with its defaults): by the run that sent it,
every quarter second at most, for as long as it takes, rather than left for a later run to send
again. That run could not tell the message had gone: Telegram keeps nothing a bot can look up, so
it would post it twice (Slack's post would look for itself; the platform would replay its answer).
Trying often matters once Redis is back: the run's lease has lapsed meanwhile, and another
worker's run would send the same job if it got there first."""

RECORDING_ON_ERROR_ANSWERS = Retry(
    _AtOnceThenExponential(cap=1.0, base=0.05), retries=20, supported_errors=(RedisError,)
)
"""An error that is Redis's answer (out of memory, a replica that cannot write) rather than its
absence: tried again for about 16 s, then the run fails and is retried as any failed run."""


async def record_what_went_out(record: Callable[[], Awaitable[_Recorded]], doing: str) -> _Recorded:
    """Runs ``record`` (writing down what a service already did) as ``RECORDING_A_SEND`` and
    ``RECORDING_ON_ERROR_ANSWERS`` say, warning when Redis fails; ``doing`` names it for that warning."""

    async def waiting(exc: Exception, failures: int) -> None:
        if failures == 1:
            log.warning("%s waits for Redis: %r", doing, exc)

    async def until_reachable() -> _Recorded:
        return await RECORDING_A_SEND.call_with_retry(record, waiting, with_failure_count=True)

    return await RECORDING_ON_ERROR_ANSWERS.call_with_retry(until_reachable, waiting, with_failure_count=True)


@dataclass
class OutboxStats:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    expired: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True)
class _Push:
    """A job's push into its thread's queue: the script call, and what its answer calls for."""

    script: Any
    keys: list[str]
    args: list[Any]
    timer: str
    raw: str
    worker: TimerWorker | None = None
    """This process's worker, when the call also leases the thread's sender to it (under ``lease_ms``)."""
    lease_ms: int = 0


@dataclass
class Outbox:
    redis: Redis
    timers: TimerStore
    senders: dict[str, Sender] = field(default_factory=dict)
    failure_reporters: dict[str, FailureReporter] = field(default_factory=dict)
    """By job kind: who is told when a job of that kind fails for good (the flow that queued it)."""
    clock: Clock = field(default_factory=SystemClock)
    base_delay: float = 1.0
    max_delay: float = MAX_RETRY_DELAY_SECONDS
    finished_grace: float = FINISHED_GRACE_SECONDS
    stats: OutboxStats = field(default_factory=OutboxStats)

    def __post_init__(self) -> None:
        self._rests: dict[str, _Rest] = {}
        self._enqueue = self.redis.register_script(_ENQUEUE)
        self._enqueue_and_take = self.redis.register_script(_ENQUEUE_AND_TAKE)
        self._one_redis = not is_cluster(self.redis)
        self._pop_head = self.redis.register_script(_POP_HEAD)
        self._pop_head_and_settle = self.redis.register_script(_POP_HEAD_AND_SETTLE)
        self._root_first = self.redis.register_script(_ROOT_FIRST)
        self.letters = DeadList(self.redis, keys.dead_letters, keys.dead_letter_ids, "id")
        self._replay_letter = self.redis.register_script(_REPLAY_LETTER)

    def register(self, kinds: Mapping[str, Sender], failures: Mapping[str, FailureReporter] | None = None) -> None:
        """Senders by job kind, and (for the flow that owns a kind) who hears of a final failure."""
        self.senders.update(kinds)
        self.failure_reporters.update(failures or {})

    async def enqueue(self, tag: str, thread: str, job: OutboxJob) -> bool:
        """Queues ``job`` behind the others of its thread. False when this job id was queued before."""
        push = self._push(tag, thread, job)
        return await self._pushed(push, await push.script(keys=push.keys, args=push.args))

    async def enqueue_then(self, tag: str, thread: str, job: OutboxJob, change: TimerChange) -> dict[str, str]:
        """``enqueue``, then the timers its step sets or stops after it (a reminder is queued behind
        the post it refers to), in one round trip on a single Redis. Returns the hash ``change``
        reads after them (empty without ``read_after``)."""
        push = self._push(tag, thread, job)
        answers, read = await self.timers.make(change, before=[(push.script, push.keys, push.args)])
        await self._pushed(push, answers[0])
        return read

    def _push(self, tag: str, thread: str, job: OutboxJob) -> _Push:
        """The call that queues ``job``; ``_pushed`` does what its answer calls for."""
        if not job.created_at:
            job = replace(job, created_at=self.clock.now())
        raw = job.dumps()
        pushed = [keys.outbox_queue(tag, thread), keys.outbox_job(tag, job.id)]
        timer = keys.outbox_timer(tag, thread)
        # A job that finds its queue empty starts its thread's sender now: nobody is sending the
        # thread. It runs here when this process's timer worker has room. This job is the head, and
        # stays it until the sender started now pops it (only a thread's sender moves its queue's
        # head), so the job is handed to it instead of read back.
        worker = self.timers.local_with_room() if self._one_redis else None
        if worker is None:
            return _Push(self._enqueue, pushed, [raw, keys.OUTBOX_JOB_TTL_SECONDS], timer, raw)
        lease_ms = worker.lease_from_now()
        return _Push(self._enqueue_and_take, [*pushed, *self.timers.keys_for(timer)[:4]],
                     [raw, keys.OUTBOX_JOB_TTL_SECONDS, timer, lease_ms], timer, raw, worker, lease_ms)  # fmt: skip

    async def _pushed(self, push: _Push, answer: Any) -> bool:
        result = int(answer)
        if result == 1:
            if push.worker is not None:
                push.worker.run_taken(push.timer, push.lease_ms, handed=push.raw)
            else:
                await self.timers.start_now(push.timer, handed=push.raw)
        if result < 0:
            # Queued before: the step that queued it is running again, and its first run may have
            # died between the push and the start. A job pushed behind others is left alone: the
            # step that pushed the first of them starts the sender, or runs again and does.
            # Starting it here too could start a second sender of the same thread.
            await self._restart_if_stopped(push.timer)
        return result > 0

    async def _restart_if_stopped(self, timer: str) -> None:
        """Starts the sender of a queue with work whose sender is neither due nor running (a step
        died between its push and the start); a sender mid-flight has a lease and reschedules itself."""
        if not await self.timers.is_pending(timer):
            await self.timers.schedule(timer, self.clock.now())

    async def pending(self, tag: str, thread: str) -> list[OutboxJob]:
        return [OutboxJob.loads(str(raw)) for raw in await self.redis.lrange(keys.outbox_queue(tag, thread), 0, -1)]

    async def dead_letters(self, tag: str) -> list[dict[str, Any]]:
        """The endpoint's dead letters, oldest first: {id, thread, reason, status, at, job}."""
        return await self.letters.read(tag)

    async def retry_dead_letter(self, tag: str, letter_id: str | None) -> int:
        """Puts dead letters (one id, or all with None) back at the end of their threads' queues,
        in the order they died; an operator's replay, so relevance and expiry no longer apply.
        Returns how many were queued again. Stopped anywhere and run again, it queues none twice
        and leaves no thread without its sender."""
        await self._finish_replays(tag)
        replayed = 0
        for raw, letter in await self.letters.matching(tag, letter_id):
            job = replace(OutboxJob(**letter["job"]), expires_at=None, relevant_key=None)
            thread, queued_raw = letter["thread"], job.dumps()
            push = _Push(self._replay_letter,
                         [keys.dead_letters(tag), keys.dead_letter_ids(tag), keys.outbox_queue(tag, thread),
                          keys.outbox_job(tag, job.id), keys.dead_letter_replays(tag)],
                         [raw, job.id, queued_raw, keys.OUTBOX_JOB_TTL_SECONDS, thread],
                         keys.outbox_timer(tag, thread), queued_raw)  # fmt: skip
            # Its answer is a queue's length, as a push's: into an empty queue, the sender starts.
            if not await self._pushed(push, await push.script(keys=push.keys, args=push.args)):
                continue  # replayed or dropped meanwhile
            await self.redis.hdel(keys.dead_letter_replays(tag), job.id)
            replayed += 1
        return replayed

    async def _finish_replays(self, tag: str) -> None:
        """Makes sure of the senders of the threads an earlier replay queued letters in and stopped
        before it had (it may have died right after queueing into an empty queue)."""
        for job_id, thread in (await self.redis.hgetall(keys.dead_letter_replays(tag))).items():
            if await self.redis.llen(keys.outbox_queue(tag, str(thread))):
                await self._restart_if_stopped(keys.outbox_timer(tag, str(thread)))
            await self.redis.hdel(keys.dead_letter_replays(tag), job_id)

    # -- sending (timer kind "outbox") -----------------------------------------------------------

    async def handle_timer(self, timer: Timer) -> None:
        if timer.due_at is None:  # taken over from a run whose lease lapsed
            await self.timers.schedule(timer.key, self.clock.now() + TAKEN_OVER_GRACE_SECONDS)
            return
        _, tag, thread = keys.split_timer_key(timer.key)
        raw = timer.handed or await self.redis.lindex(keys.outbox_queue(tag, thread), 0)
        for _ in range(JOBS_PER_RUN):
            if raw is None:
                return
            raw = await self._send_head(timer, tag, thread, OutboxJob.loads(str(raw)))
        if raw is not None:
            await self.timers.schedule(timer.key, self.clock.now())

    async def _send_head(self, timer: Timer, tag: str, thread: str, job: OutboxJob) -> str | None:
        """Sends the head of the thread's queue; returns the next head when this one is done with
        (sent, or dead-lettered) and None when the queue is empty or the head waits for a retry."""
        queue = keys.outbox_queue(tag, thread)
        sender = self.senders.get(job.kind)
        service = job.kind.split(".", 1)[0]
        rest = self._rests.get(service)
        probe = sent = False
        recorded: Recorded | None = None
        follows: list[_Push] = []
        try:
            if job.expired(self.clock.now()):
                raise Expired("its moment passed before it could be sent")
            if sender is None:
                raise FinalFailure(f"no sender for {job.kind!r} in this process")
            if rest is not None and rest.resting:
                if rest.probing or self.clock.now() < rest.until:
                    later = max(rest.until, self.clock.now()) + random.uniform(0, self.base_delay)
                    await self.timers.schedule(timer.key, later)
                    return None
                rest.probing = probe = True
            with bound(**about(tag, thread), job_id=job.id):
                recorded = await sender(job)
                log.debug("outbox %s: %s sent", thread, job.kind)
        except Expired as exc:
            self.stats.expired += 1
            METRICS.outbox.labels(job.kind, "expired").inc()
            await self._dead_letter(tag, thread, job, f"no longer relevant: {exc}", None, "expired")
        except WaitingForRoot as exc:
            if int(await self._root_first(keys=[queue])):
                root = await self.redis.lindex(queue, 0)  # the root, now first
                return None if root is None else str(root)
            await self._retry(timer, tag, thread, job, exc)
            return None
        except RetryLater as exc:
            if not exc.pacing and exc.after is None:
                self._failed(service, probe)
            await self._retry(timer, tag, thread, job, exc)
            return None
        except FinalFailure as exc:
            self._answered(service)
            await self._give_up(tag, thread, job, exc)
        else:
            sent = True
            self._answered(service)
            self.stats.sent += 1
            METRICS.outbox.labels(job.kind, "sent").inc()
            # Queued with this job's pop, in the same round trip, just ahead of it.
            follows = [self._push(f["tag"], f["thread"], OutboxJob(**f["job"])) for f in job.then or []]
        finally:
            if probe and rest is not None:
                rest.probing = False  # whatever the check ended in, the next one may go
        if not sent:
            return await self._pop(timer, tag, thread, job, recorded, follows)

        waited = False

        async def pop() -> str | None:
            nonlocal waited
            try:
                return await self._pop(timer, tag, thread, job, recorded, follows)
            except RedisError:
                waited = True
                raise

        head = await record_what_went_out(pop, f"outbox {thread}: {job.id} went out; taking it off its queue")
        if waited and head is not None:
            # Redis was gone while this run held the thread, long enough, maybe, for its lease to
            # lapse and another run to take the thread over (waiting TAKEN_OVER_GRACE_SECONDS for
            # this pop): the next job goes in a run of its own, never in two at once.
            await self.timers.schedule(timer.key, self.clock.now())
            return None
        return head

    def _failed(self, service: str, probe: bool) -> None:
        """A call to ``service`` failed. From the FAILURES_BEFORE_REST-th in a row its sends rest,
        longer after each failed check (the outbox's own backoff); failures of calls that were
        already on their way when the rest began do not lengthen it."""
        rest = self._rests.setdefault(service, _Rest())
        rest.probing = False
        if rest.resting and not probe:
            return
        rest.failures += 1
        if rest.resting:
            checks = rest.failures - FAILURES_BEFORE_REST
            rest.until = self.clock.now() + self._backoff(checks)
            if not checks:
                log.warning("%s: %d calls failed in a row; its sends wait while one call at a time checks "
                            "whether it is back", service, rest.failures)  # fmt: skip

    def _answered(self, service: str) -> None:
        rest = self._rests.pop(service, None)
        if rest is not None and rest.resting:
            log.warning("%s answers again: its sends go on", service)

    def _backoff(self, failed_before: int) -> float:
        """Capped exponential backoff with jitter, after ``failed_before`` earlier failures."""
        return min(self.max_delay, self.base_delay * 2.0 ** min(failed_before, 16)) * random.uniform(0.5, 1.0)

    async def _pop(
        self,
        timer: Timer,
        tag: str,
        thread: str,
        job: OutboxJob,
        recorded: Recorded | None = None,
        follows: Sequence[_Push] = (),
    ) -> str | None:
        """Removes ``job`` from the head of its queue, setting what its send ``recorded`` and queueing
        the jobs that ``follow`` it first; returns the job now first, if any. The run of ``timer``
        that sent it ends when the queue is empty: on a single Redis it is acknowledged in the same
        call, and the whole is one round trip."""
        queue = [keys.outbox_queue(tag, thread), keys.outbox_attempts(tag)]
        records = dict(recorded or {})
        settling = self._one_redis and timer.lease.held
        lease = timer.lease.token  # read before the call: a renewal meanwhile makes it not match
        calls: list[ScriptCall] = [(push.script, push.keys, push.args) for push in follows]
        if settling:
            calls.append((self._pop_head_and_settle, [*queue, *self.timers.keys_for(timer.key)[:4], *records],
                          [job.id, timer.key, lease, keys.REF_KEEP_SECONDS, *records.values()]))  # fmt: skip
        else:
            calls.append((self._pop_head, [*queue, *records], [job.id, keys.REF_KEEP_SECONDS, *records.values()]))
        (*pushed, popped), _ = await in_one_call(self.redis, calls)
        for push, answer in zip(follows, pushed, strict=True):
            await self._pushed(push, answer)
        if not settling:
            return None if popped is None else str(popped)
        head, settled = popped
        if int(settled):
            timer.lease.held = False
        return str(head) or None

    async def _next(self, timer: Timer, tag: str, thread: str, job: OutboxJob) -> None:
        if await self._pop(timer, tag, thread, job) is not None:
            await self.timers.schedule(timer.key, self.clock.now())

    async def irrelevance(self, job: OutboxJob) -> str | None:
        """Why ``job`` no longer matters, or None while it does."""
        now = self.clock.now()
        if job.expired(now):
            return "its moment has passed"
        if job.relevant_key is None:
            return None
        status, finished_at = await self.redis.hmget(job.relevant_key, ["status", "finished_at"])
        grace = self.finished_grace if job.relevant_grace is None else job.relevant_grace
        if status is None:  # not recorded yet (a creator's copy can come first), or long expired
            if now < job.created_at + grace:
                return None
            return "what it belongs to is not (or no longer) recorded"
        if status in LIVE_STATUSES:
            return None
        if finished_at and now < float(finished_at) + grace:
            return None
        return f"what it belongs to finished ({status!s}) more than {grace:.0f} s ago"

    async def _retry(self, timer: Timer, tag: str, thread: str, job: OutboxJob, exc: RetryLater) -> None:
        if exc.pacing:
            await self.timers.schedule(timer.key, self.clock.now() + (exc.after or 0))
            return
        gone = await self.irrelevance(job)
        if gone is not None:
            reason = f"no longer relevant: {gone} (last error: {exc.reason})"
            await self._give_up(tag, thread, job, FinalFailure(reason), "irrelevant")
            await self._next(timer, tag, thread, job)
            return
        if exc.after is not None:
            # The service said when (a 429's Retry-After): exactly then, and not counted as a failure,
            # so a rate limit does not stretch the backoff of the next real outage.
            delay = exc.after
        else:
            attempts = await self.redis.hincrby(keys.outbox_attempts(tag), job.id, 1)
            delay = self._backoff(attempts - 1)
        self.stats.retried += 1
        METRICS.outbox.labels(job.kind, "retried").inc()
        log.info("outbox %s %s: %s; retrying in %.1f s", tag, job.id, exc.reason, delay)
        await self.timers.schedule(timer.key, self.clock.now() + delay)

    async def _give_up(self, tag: str, thread: str, job: OutboxJob, exc: FinalFailure, cause: str = "refused") -> None:
        """Dead-letters the job and tells whoever acted (a reply refused, or outlived by its chat)."""
        self.stats.failed += 1
        METRICS.outbox.labels(job.kind, "failed").inc()
        await self._dead_letter(tag, thread, job, exc.reason, exc.status, cause)
        report = self.failure_reporters.get(job.kind)
        if report is not None and job.report_to is not None:
            try:
                await report(job, exc, tag)
            except (RedisError, OSError):
                raise  # the step runs again: the job is dead-lettered once, and the report is made then
            except Exception:
                log.exception("outbox %s %s: could not report the failure", tag, job.id)

    async def _dead_letter(
        self, tag: str, thread: str, job: OutboxJob, reason: str, status: int | None, cause: str
    ) -> None:
        record = {"id": job.id, "thread": thread, "reason": reason, "status": status, "at": self.clock.now(),
                  "job": asdict(job)}  # fmt: skip
        if not await self.letters.put(tag, record):
            return  # dead-lettered by a run of this step that died before taking the job off its queue
        self.stats.dead_lettered += 1
        METRICS.dead_letters.labels(tag.strip("{}"), job.kind, cause).inc()
        log.warning("outbox %s %s (%s) dead-lettered: %s", tag, job.id, job.kind, reason)
