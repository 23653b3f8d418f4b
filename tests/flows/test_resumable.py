"""Every flow step survives a crash or a Redis error at any line: run again, it ends as one clean run.

A failure is injected at the n-th Redis call a step makes — before the call reaches Redis (a crash
before it, a connection refused) or after Redis ran it and before its answer arrives (a crash right
after it, a lost reply) — for every n the step has. The step is then retried the way the bridge
retries it (the consumer's backoff, the timer worker's retry, the person's redelivery), and what
landed in Slack, on the platform and in Redis is compared with a run that had no failure."""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.config import Store
from bridge.engine import keys
from bridge.engine.endpoint import Endpoint
from bridge.engine.events import IN_FLIGHT_SECONDS, DeadEvents, StoredEvent
from bridge.flows.views import Actor
from tests.conftest import Stack

TAG = "{store:1001}"
GROUP, OWNER, STORE_1002 = -1001002000001, 1002001, "{store:1002}"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
CHATS, TASKS, CREATOR_CHANNEL = "C0CHATS1001", "C0TASKS1001", "C0CREATOR9001"
AGENT_A = "U0AGENTA"


class RedisFaults:
    """Fails the n-th Redis command (or pipeline) issued inside a wrapped step, once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._inside = contextvars.ContextVar("inside_step", default=False)
        self.calls = 0
        self.fail_at: int | None = None
        self.after = False
        self.fired = False
        execute_command, execute = Redis.execute_command, Pipeline.execute

        async def patched_command(client: Redis, *args: Any, **options: Any) -> Any:
            return await self._call(lambda: execute_command(client, *args, **options))  # type: ignore[no-untyped-call]

        async def patched_execute(pipe: Pipeline, raise_on_error: bool = True) -> Any:
            return await self._call(lambda: execute(pipe, raise_on_error))

        monkeypatch.setattr(Redis, "execute_command", patched_command)
        monkeypatch.setattr(Pipeline, "execute", patched_execute)

    async def _call(self, call: Callable[[], Awaitable[Any]]) -> Any:
        if not self._inside.get():
            return await call()
        self.calls += 1
        if self.calls != self.fail_at or self.fired:
            return await call()
        self.fired = True
        if self.after:
            await call()
        raise RedisConnectionError(f"injected: Redis call {self.calls} {'lost its answer' if self.after else 'failed'}")

    def arm(self, n: int | None, after: bool = False) -> None:
        self.calls, self.fail_at, self.after, self.fired = 0, n, after, False

    def wrap(self, step: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            token = self._inside.set(True)
            try:
                return await step(*args, **kwargs)
            finally:
                self._inside.reset(token)

        return wrapped


@pytest.fixture
def faults(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> RedisFaults:
    return RedisFaults(monkeypatch)


def normalized(text: str, *names: str) -> str:
    for i, name in enumerate(names):
        text = text.replace(name, f"<{i}>")
    text = re.sub(r"<!date\^\d+\^[^>]*>", "<date>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "<when>", text)  # each run starts later
    return re.sub(r"690[0-9a-f]{10}", "<order>", text)  # the sandbox numbers each run's orders anew


def landed(stack: Stack, channel: str, job: str) -> list[Any]:
    return [m for m in stack.slack.messages if m.channel == channel and (m.metadata or {}).get("event_payload", {})
            .get("job") == job]  # fmt: skip


def card_ts(stack: Stack, tid: str) -> str:
    """Where the task order's card landed in Slack: replies under it are the merchant's."""
    return str(landed(stack, TASKS, f"slack:task:{tid}:card")[0].ts)


async def chat_state(stack: Stack, cid: str) -> dict[str, Any]:
    """Everything a person or the next step can see of one chat."""
    chat = await stack.redis.hgetall(keys.chat(TAG, cid))
    roots = landed(stack, CHATS, f"slack:root:{cid}")
    thread = stack.slack.thread(CHATS, roots[0].ts) if roots else []
    due = await stack.bridge.timers.due_at(keys.window_timer(TAG, cid))
    conv = stack.sandbox.conversations[cid]
    return {
        "roots": [normalized(r.text, cid) for r in roots],
        "thread": [normalized(m.text, cid) for m in thread],
        "reactions": [m.reactions for m in stack.slack.messages if m.channel == CHATS and m.user == AGENT_A],
        "ephemerals": [e["text"] for e in stack.slack.ephemerals],
        "status": chat.get("status"),
        "close_reason": chat.get("close_reason"),
        "assignee": chat.get("assignee"),
        "window": None if not chat.get("window_start") else float(chat["deadline"]) - float(chat["window_start"]),
        "window_timer": None if due is None or not chat.get("window_start") else due - float(chat["window_start"]),
        "answered": bool(chat.get("first_reply_at")),
        "loads": await stack.redis.hgetall(keys.agent_load(TAG)),
        "counted": sorted(str(f).split(":")[0] for f in chat if str(f).startswith(("reply:", "late:"))),
        "messages": await stack.redis.hlen(keys.chat_messages(TAG, cid)),
        "to_platform": [m["content"] for m in conv.messages if m["from"] == "merchant"],
        "queued": await stack.redis.keys(f"{TAG}:outbox:chat:{cid}:*"),
        "dead": await stack.bridge.outbox.dead_letters(TAG),
    }


async def reset(stack: Stack) -> None:
    """Between runs: a clean Redis and emulators, and the clock where the last run left it."""
    await stack.redis.flushall()
    stack.slack.messages.clear()
    stack.slack.ephemerals.clear()
    stack.slack.calls.clear()
    stack.slack._buckets.clear()  # a new minute for the channel's allowance: runs start alike
    stack.sandbox.records.clear()


async def each_failure(
    stack: Stack,
    faults: RedisFaults,
    prepare: Callable[[], Awaitable[Any]],
    step: Callable[[Any], Awaitable[None]],
    state: Callable[[Any], Awaitable[dict[str, Any]]],
) -> tuple[int, dict[str, Any]]:
    """Runs ``step`` once cleanly, then again with a failure at each of its Redis calls, before and
    after the call; each run is retried to the end and must reach the clean run's state. Returns
    how many failure points were tried, and that state (what the tests then check is right)."""
    for _ in range(2):  # the first run also loads the scripts into Redis: count the second
        await reset(stack)
        subject = await prepare()
        faults.arm(None)
        await step(subject)
        clean, calls = await state(subject), faults.calls
    assert calls >= 3, "the step talks to Redis"
    tried = 0
    for n in range(1, calls + 1):
        for after in (False, True):
            await reset(stack)
            subject = await prepare()
            faults.arm(n, after)
            await step(subject)
            assert faults.fired, f"call {n} was reached"
            got = await state(subject)
            assert got == clean, f"failure at Redis call {n} ({'after' if after else 'before'} it): {got} != {clean}"
            tried += 1
    return tried, clean


async def settle(stack: Stack) -> None:
    """Runs until everything is handled and sent, retries included (never across a reply window)."""
    await stack.settle(horizon=6.0)


# -- flow 1 ----------------------------------------------------------------------------------------


async def test_opening_a_chat(stack: Stack, faults: RedisFaults) -> None:
    handlers = stack.bridge.event_handlers
    handlers["im_platform_message"] = faults.wrap(stack.bridge.chats.on_platform_message)

    async def prepare() -> None:
        return None

    async def step(_: None) -> None:
        await stack.sandbox.open_chat("1001", {"type": "text", "text": "买家问：什么时候发货？"})
        await settle(stack)

    async def state(_: None) -> dict[str, Any]:
        [cid] = stack.sandbox.conversations.keys() - seen
        seen.add(cid)
        return await chat_state(stack, cid)

    seen: set[str] = set()
    tried, clean = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 8  # 4 calls; the root and its timers are one
    assert len(clean["roots"]) == 1 and clean["status"] == "open" and clean["window_timer"] == 60


async def open_chat(stack: Stack) -> tuple[str, str]:
    cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "在吗"})
    await stack.settle()
    return cid, landed(stack, CHATS, f"slack:root:{cid}")[0].ts


def replying(
    stack: Stack, store: Store, reply: Callable[..., Awaitable[Any]], text: str
) -> Callable[[tuple[str, str]], Awaitable[None]]:
    """An agent's reply in a chat's thread, handled as the connector calls it; a failure is retried
    with the same message (a redelivery)."""

    async def step(chat: tuple[str, str]) -> None:
        cid, root_ts = chat
        ts, _ = await stack.slack.user_message(AGENT_A, CHATS, text, thread_ts=root_ts)
        actor = Actor("slack", AGENT_A, CHATS, root_ts, ts)
        try:
            await reply(store, cid, actor, text)
        except RedisConnectionError:
            await reply(store, cid, actor, text)
        await settle(stack)

    return step


async def test_accepting_a_reply(stack: Stack, faults: RedisFaults) -> None:
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    step = replying(stack, store, faults.wrap(stack.bridge.chats.reply), "今天发")
    _, done = await each_failure(stack, faults, lambda: open_chat(stack), step, lambda chat: chat_state(stack, chat[0]))
    assert done["to_platform"] == [{"type": "text", "text": "今天发"}] and done["answered"]
    assert done["window"] is None and done["window_timer"] is None


async def test_posting_again_a_slack_header_someone_deleted(stack: Stack, faults: RedisFaults) -> None:
    """A chat's header deleted in Slack: wherever the outbox fails while it posts it again and
    records it as the thread's root, it lands once, and the next message goes under it."""
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    stack.bridge.timer_handlers["outbox"] = faults.wrap(stack.bridge.outbox.handle_timer)

    async def deleted_header() -> tuple[str, str]:
        cid, root_ts = await open_chat(stack)
        stack.slack.messages.remove(stack.slack.message(CHATS, root_ts))
        return cid, root_ts

    async def step(chat: tuple[str, str]) -> None:
        await replying(stack, store, stack.bridge.chats.reply, "今天发")(chat)
        await stack.sandbox.chat_message(chat[0], {"type": "text", "text": "好的"})
        await settle(stack)

    async def state(chat: tuple[str, str]) -> dict[str, Any]:
        headers = [m for m in stack.slack.channel(CHATS) if m.thread_ts is None]
        sent = stack.sandbox.conversations[chat[0]].messages
        return {
            "headers": [normalized(m.text, chat[0]) for m in headers],
            "under_it": [normalized(m.text, chat[0]) for h in headers for m in stack.slack.thread(CHATS, h.ts)],
            "to_platform": [m["content"] for m in sent if m["from"] == "merchant"],
            "dead": await stack.bridge.outbox.dead_letters(TAG),
        }

    tried, done = await each_failure(stack, faults, deleted_header, step, state)
    assert tried >= 4
    assert len(done["headers"]) == 1 and "待回复" in done["headers"][0] and done["dead"] == [], "kept up to date"
    assert any("好的" in text for text in done["under_it"])
    assert done["to_platform"] == [{"type": "text", "text": "今天发"}]


async def test_accepting_a_further_reply_while_no_window_runs(stack: Stack, faults: RedisFaults) -> None:
    """The reply that leaves the header as it was: run again after a failure anywhere, it still
    reaches the platform once, with its ✅, and the header still says answered."""
    store = stack.bridge.holder.current.store("1001")
    assert store is not None

    async def answered_chat() -> tuple[str, str]:
        chat = await open_chat(stack)
        await replying(stack, store, stack.bridge.chats.reply, "在的")(chat)
        return chat

    step = replying(stack, store, faults.wrap(stack.bridge.chats.reply), "今天发")
    tried, done = await each_failure(stack, faults, answered_chat, step, lambda chat: chat_state(stack, chat[0]))
    assert tried >= 4
    assert done["to_platform"] == [{"type": "text", "text": "在的"}, {"type": "text", "text": "今天发"}]
    assert done["reactions"] == [["white_check_mark"]] * 2 and "已回复" in done["roots"][0]


async def clicked_twice(stack: Stack, step: Callable[[], Awaitable[None]]) -> None:
    """A click's handling, and once more if it failed (the click is stored: the consumer runs it again)."""
    try:
        await step()
    except RedisConnectionError:
        await step()
    await settle(stack)


async def test_claiming_a_chat_and_marking_it_handled_elsewhere(stack: Stack, faults: RedisFaults) -> None:
    """Claim (the chat and its load move, the thread and header say so) and Handled elsewhere (the
    window stops) are each finished exactly once by their retry, wherever the first run failed."""
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    assign, elsewhere = faults.wrap(stack.bridge.chats.assign), faults.wrap(stack.bridge.chats.handled_elsewhere)

    async def claim(chat: tuple[str, str]) -> None:
        cid, root_ts = chat
        await clicked_twice(
            stack, lambda: assign(store, cid, None, Actor("slack", AGENT_A, CHATS, root_ts, None), "tr-claim")
        )

    async def mark(chat: tuple[str, str]) -> None:
        cid, root_ts = chat
        await clicked_twice(
            stack, lambda: elsewhere(store, cid, Actor("slack", AGENT_A, CHATS, root_ts, None), "tr-else")
        )

    state = lambda chat: chat_state(stack, chat[0])  # noqa: E731
    tried, claimed = await each_failure(stack, faults, lambda: open_chat(stack), claim, state)
    assert tried >= 6
    assert claimed["assignee"] == "agent-a" and claimed["loads"] == {"main-1001": "0", "agent-a": "1"}
    assert sum(line.startswith("👤 ") for line in claimed["thread"]) == 1, "said once"
    assert (await each_failure(stack, faults, lambda: open_chat(stack), mark, state))[0] >= 6
    await reset(stack)  # and marked after a claim, as a person would
    cid, root_ts = await open_chat(stack)
    await claim((cid, root_ts))
    await mark((cid, root_ts))
    marked = await chat_state(stack, cid)
    assert marked["window"] is None and marked["window_timer"] is None and marked["status"] == "open"
    assert sum(line.startswith("✋ ") for line in marked["thread"]) == 1


async def test_offering_reassign_and_picking_from_the_menu(stack: Stack, faults: RedisFaults) -> None:
    """Reassign… (a menu of agents in the thread; one offered before loses its buttons) and a pick
    from it (the chat moves, the menu loses its buttons): each finished exactly once by its retry."""
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    offer, assign = faults.wrap(stack.bridge.chats.offer_reassign), faults.wrap(stack.bridge.chats.assign)

    def main(root_ts: str) -> Actor:
        return Actor("slack", "U0MAIN1001", CHATS, root_ts, None)  # the main account: it alone reassigns

    async def offered_before() -> tuple[str, str]:
        cid, root_ts = await open_chat(stack)
        await stack.bridge.chats.offer_reassign(store, cid, main(root_ts), "tr-menu-1")
        await settle(stack)
        return cid, root_ts

    async def offer_again(chat: tuple[str, str]) -> None:
        await clicked_twice(stack, lambda: offer(store, chat[0], main(chat[1]), "tr-menu-2"))

    async def pick(chat: tuple[str, str]) -> None:
        target = "agent-b" if await stack.redis.hget(keys.chat(TAG, chat[0]), "assignee") != "agent-b" else "agent-a"
        await clicked_twice(stack, lambda: assign(store, chat[0], target, main(chat[1]), "tr-pick"))

    async def state(chat: tuple[str, str]) -> dict[str, Any]:
        roots = landed(stack, CHATS, f"slack:root:{chat[0]}")
        menus = [m for m in stack.slack.thread(CHATS, roots[0].ts) if "把会话转交给" in m.text]
        with_buttons = [bool([b for b in m.blocks if b["type"] == "actions"]) for m in menus]
        return await chat_state(stack, chat[0]) | {"menus_with_buttons": with_buttons}

    tried, offered = await each_failure(stack, faults, offered_before, offer_again, state)
    assert tried >= 2 and offered["menus_with_buttons"] == [False, True], "the newest menu alone has buttons"
    tried, picked = await each_failure(stack, faults, offered_before, pick, state)
    assert tried >= 4 and picked["menus_with_buttons"] == [False]
    assert sum(line.startswith("👤 ") for line in picked["thread"]) == 1, "said once"


async def test_a_redelivered_platform_message_never_restarts_an_answered_window(
    stack: Stack, faults: RedisFaults
) -> None:
    """The crash the issue found: a message handled again after the reply is not a new window."""
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    cid, root_ts = await open_chat(stack)
    [first] = [r for d in stack.sandbox.deliveries for r in d.records if f'"conversation_id": "{cid}"' in r["data"]]
    await stack.slack.user_message(AGENT_A, CHATS, "好的", thread_ts=root_ts)
    await stack.settle()
    assert (await chat_state(stack, cid))["window"] is None
    # The consumer runs the chat's first event again (a crash lost its completion).
    again = StoredEvent(Endpoint("store", "1001"), "0-1", first["msg_id"], first["tag"], f"chat:{cid}", 1,
                        first["data"], 0.0)  # fmt: skip
    await stack.bridge.chats.on_platform_message(again)
    await stack.advance(130)
    got = await chat_state(stack, cid)
    assert got["status"] == "open" and got["window"] is None, "still answered, never closed as a timeout"
    assert len(got["roots"]) == 1 and not any("还剩" in t for t in got["thread"]), "nothing posted again"


async def test_closing_a_chat_when_its_window_runs_out(stack: Stack, faults: RedisFaults) -> None:
    stack.bridge.timer_handlers["window"] = faults.wrap(stack.bridge.chats.on_window_timer)

    async def step(chat: tuple[str, str]) -> None:
        await stack.advance(120 + IN_FLIGHT_SECONDS + 5)  # past the deadline and the wait for replies in flight

    _, done = await each_failure(stack, faults, lambda: open_chat(stack), step, lambda chat: chat_state(stack, chat[0]))
    assert done["status"] == "closed" and done["loads"] == {"main-1001": "0"}
    assert done["counted"] == [] and done["close_reason"] == "reply_timeout"
    assert [t[:14] for t in done["thread"]] == [
        "<@U0MAIN1001> ",  # 60 s left
        "<@U0MAIN1001> ",  # 30 s left, with the escalation to the others
        "⛔ 会话已关闭：超时未回复，",
    ]
    assert "<@U0AGENTA> <@U0AGENTB> ⏰ 还剩 30 秒" in done["thread"][1]


async def test_the_platform_closing_a_chat(stack: Stack, faults: RedisFaults) -> None:
    """The platform's own close (its agent ended the chat): the header, the notice, the agent's load."""
    stack.bridge.event_handlers["im_platform_closed"] = faults.wrap(stack.bridge.chats.on_platform_closed)

    async def step(chat: tuple[str, str]) -> None:
        await stack.sandbox.close_chat(chat[0])
        await settle(stack)

    _, done = await each_failure(stack, faults, lambda: open_chat(stack), step, lambda chat: chat_state(stack, chat[0]))
    assert (done["status"], done["close_reason"], done["loads"]) == ("closed", "platform_closed", {"main-1001": "0"})
    assert done["window_timer"] is None and len(done["thread"]) == 1 and "⛔" in done["thread"][0]


async def test_a_reply_the_platform_refuses_because_the_chat_closed_there(stack: Stack, faults: RedisFaults) -> None:
    """A reply refused with 409 (the platform closed the chat): one dead letter, the chat closed here
    too (header, load, notice), the agent told once, whatever fails on the way."""
    stack.bridge.timer_handlers["outbox"] = faults.wrap(stack.bridge.outbox.handle_timer)

    async def step(chat: tuple[str, str]) -> None:
        stack.sandbox.fail_next("POST", f"/im/conversations/{chat[0]}/messages", 409, times=10)
        await stack.slack.user_message(AGENT_A, CHATS, "在的", thread_ts=chat[1])
        await settle(stack)
        stack.sandbox._faults.clear()

    async def state(chat: tuple[str, str]) -> dict[str, Any]:
        got = await chat_state(stack, chat[0])
        return got | {"dead": [(d["job"]["kind"], d["status"]) for d in got["dead"]]}

    _, done = await each_failure(stack, faults, lambda: open_chat(stack), step, state)
    assert (done["status"], done["close_reason"], done["loads"]) == ("closed", "platform_closed", {"main-1001": "0"})
    assert done["dead"] == [("platform.send_message", 409)] and len(done["ephemerals"]) == 1


async def test_opening_a_chat_in_a_telegram_forum(stack: Stack, faults: RedisFaults) -> None:
    """Store 1002's group is a forum: a chat opens its own topic, once, and its header goes there,
    whatever fails between Telegram opening the topic and the bridge recording it."""
    stack.bridge.timer_handlers["outbox"] = faults.wrap(stack.bridge.outbox.handle_timer)
    tg = stack.telegram

    async def prepare() -> str:
        await reset_tasks(stack)
        tg.topics.clear()
        tg.forums.add(GROUP)
        return await stack.sandbox.open_chat("1002", {"type": "text", "text": "Can the buyer change the size?"})

    async def step(cid: str) -> None:
        await settle(stack)

    async def state(cid: str) -> dict[str, Any]:
        return {
            "topics": sorted(tg.topics.values()),
            "posted": [(m.thread_id is not None, normalized(m.text, cid)[:40]) for m in tg.by_bot(GROUP)],
            "dead": await stack.bridge.outbox.dead_letters(STORE_1002),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 4
    assert len(done["topics"]) == 1 and [in_topic for in_topic, text in done["posted"] if text] == [True]


async def test_a_follow_up_to_ones_own_reply_in_a_telegram_reply_chain(stack: Stack, faults: RedisFaults) -> None:
    """Without topics, a reply to a person's message in a chat's chain is in the chat: the first
    reply is recorded as a member of the chain while it is handled, whatever fails, so the answer
    to it reaches platform CS, once."""
    stack.bridge.event_handlers["telegram.update"] = faults.wrap(stack.bridge.event_handlers["telegram.update"])
    tg = stack.telegram

    async def prepare() -> tuple[str, int]:
        await reset_tasks(stack)
        tg.forums.discard(GROUP)
        cid = await stack.sandbox.open_chat("1002", {"type": "text", "text": "Can the buyer change the size?"})
        await stack.settle()
        return cid, tg.by_bot(GROUP)[-1].message_id

    async def step(subject: tuple[str, int]) -> None:
        first, _ = await tg.user_message(1002001, GROUP, "Yes, within 7 days", reply_to=subject[1])
        await settle(stack)
        await tg.user_message(1002001, GROUP, "the buyer pays the postage", reply_to=first.message_id)
        await settle(stack)

    async def state(subject: tuple[str, int]) -> dict[str, Any]:
        conversation = stack.sandbox.conversations[subject[0]]
        return {
            "sent": [m["content"].get("text") for m in conversation.messages if m["from"] == "merchant"],
            "told": [m.text for m in tg.by_bot(GROUP) if m.reply_to is not None],
            "dead": await stack.bridge.outbox.dead_letters(STORE_1002),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 4
    assert done["sent"] == ["Yes, within 7 days", "the buyer pays the postage"] and done["told"] == []


@pytest.mark.parametrize("told", [True, False], ids=["told", "learnt_from_a_refusal"])
async def test_following_a_telegram_group_made_a_supergroup(stack: Stack, faults: RedisFaults, told: bool) -> None:
    """Telegram gives a group a new id when it becomes a supergroup. Whatever fails while the bridge
    learns the new id (from Telegram's notice, or from its refusal of the old id) and records it,
    the chat's next message lands in the new group once, with the chat's header posted again there
    once, and the answer there reaches platform CS."""
    handlers = stack.bridge.event_handlers
    handlers["telegram.update"] = faults.wrap(handlers["telegram.update"])
    stack.bridge.timer_handlers["outbox"] = faults.wrap(stack.bridge.outbox.handle_timer)
    tg, supergroup = stack.telegram, -1001002999999

    async def prepare() -> str:
        await reset_tasks(stack)
        tg.forums.discard(GROUP)
        tg.upgraded.clear()
        stack.bridge.router.renamed.clear()
        stack.bridge.connectors["telegram"]._moved.clear()  # type: ignore[attr-defined]
        cid = await stack.sandbox.open_chat("1002", {"type": "text", "text": "Can the buyer change the size?"})
        await stack.settle()
        return cid

    async def step(cid: str) -> None:
        await tg.upgrade_group(GROUP, supergroup, OWNER, tell_the_bot=told)
        await settle(stack)
        await stack.sandbox.chat_message(cid, {"type": "text", "text": "And the colour?"})
        await settle(stack)
        follow_up = tg.by_bot(supergroup)[-1].message_id
        await tg.user_message(OWNER, supergroup, "Both, within 7 days", reply_to=follow_up)
        await settle(stack)

    async def state(cid: str) -> dict[str, Any]:
        conversation = stack.sandbox.conversations[cid]
        return {
            "posted": [normalized(m.text, cid)[:60] for m in tg.by_bot(supergroup)],
            "sent": [m["content"].get("text") for m in conversation.messages if m["from"] == "merchant"],
            "dead": await stack.bridge.outbox.dead_letters(STORE_1002),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 4
    [follow_up, header] = done["posted"]  # the header posted again there: the old group's takes no edits
    assert "And the colour?" in follow_up and "Feige" in header
    assert done["sent"] == ["Both, within 7 days"] and done["dead"] == []


async def test_a_chat_whose_telegram_topic_was_deleted(stack: Stack, faults: RedisFaults) -> None:
    """A person deletes a chat's forum topic. Whatever fails while the bridge forgets the topic,
    posts the next message in the group's main view and posts the header again there, each lands
    once, and the answer reaches platform CS once."""
    stack.bridge.event_handlers["telegram.update"] = faults.wrap(stack.bridge.event_handlers["telegram.update"])
    stack.bridge.timer_handlers["outbox"] = faults.wrap(stack.bridge.outbox.handle_timer)
    tg = stack.telegram

    async def prepare() -> str:
        await reset_tasks(stack)
        tg.topics.clear()
        tg.gone_topics.clear()
        tg.forums.add(GROUP)
        cid = await stack.sandbox.open_chat("1002", {"type": "text", "text": "Can the buyer change the size?"})
        await stack.settle()
        return cid

    async def step(cid: str) -> None:
        [topic] = [thread for chat, thread in tg.topics if chat == GROUP]
        tg.delete_topic(GROUP, topic)
        await stack.sandbox.chat_message(cid, {"type": "text", "text": "And the colour?"})
        await settle(stack)
        follow_up = [m for m in tg.by_bot(GROUP) if "And the colour?" in m.text][-1].message_id
        await tg.user_message(OWNER, GROUP, "Both, within 7 days", reply_to=follow_up)
        await settle(stack)

    async def state(cid: str) -> dict[str, Any]:
        conversation = stack.sandbox.conversations[cid]
        return {
            "posted": [normalized(m.text, cid)[:50] for m in tg.by_bot(GROUP) if m.thread_id is None],
            "sent": [m["content"].get("text") for m in conversation.messages if m["from"] == "merchant"],
            "dead": await stack.bridge.outbox.dead_letters(STORE_1002),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 4
    assert len(done["posted"]) == 2 and "And the colour?" in done["posted"][0] and "Feige" in done["posted"][1]
    assert done["sent"] == ["Both, within 7 days"] and done["dead"] == []


async def platform_cs_writes_again(
    stack: Stack, faults: RedisFaults, before: Callable[[str, str], Awaitable[object]]
) -> dict[str, Any]:
    """Platform CS writes "买家还想改地址" in a chat ``before`` (given its id and root) brought to some
    state; each Redis call of handling it fails in turn. Returns the clean run's state."""
    stack.bridge.event_handlers["im_platform_message"] = faults.wrap(stack.bridge.chats.on_platform_message)

    async def prepare() -> tuple[str, str]:
        cid, root_ts = await open_chat(stack)
        await before(cid, root_ts)
        await stack.settle()
        return cid, root_ts

    async def step(chat: tuple[str, str]) -> None:
        await stack.sandbox.chat_message(chat[0], {"type": "text", "text": "买家还想改地址"})
        await settle(stack)

    _, done = await each_failure(stack, faults, prepare, step, lambda chat: chat_state(stack, chat[0]))
    return done


async def test_a_follow_up_from_platform_cs_after_the_reply(stack: Stack, faults: RedisFaults) -> None:
    """Platform CS writes again in an answered chat: the message mirrored once, a new window started
    once (header and timer), its timers set once."""
    done = await platform_cs_writes_again(
        stack, faults, lambda _, root_ts: stack.slack.user_message(AGENT_A, CHATS, "在的", thread_ts=root_ts)
    )
    assert done["status"] == "open" and done["window"] == 120 and done["window_timer"] == 60
    assert sum("买家还想改地址" in line for line in done["thread"]) == 1 and "待回复" in done["roots"][0]


async def test_a_message_from_platform_cs_after_the_bridge_closed_the_chat(stack: Stack, faults: RedisFaults) -> None:
    """Mirrored once and kept once with the chat's messages; the chat stays closed, no window timer."""
    done = await platform_cs_writes_again(stack, faults, lambda cid, _: stack.sandbox.close_chat(cid))
    assert done["status"] == "closed" and done["window_timer"] is None and done["messages"] == 2
    assert sum("买家还想改地址" in line for line in done["thread"]) == 1 and "⛔" in done["thread"][0]


# -- flow 2 ----------------------------------------------------------------------------------------

CREATOR_CHAT = 7001


async def task_state(stack: Stack, tid: str) -> dict[str, Any]:
    """Everything a person or the next step can see of one task order."""
    task = await stack.redis.hgetall(keys.task(TAG, tid))
    cards = landed(stack, TASKS, f"slack:task:{tid}:card")
    due = await stack.bridge.timers.due_at(keys.deadline_timer(TAG, tid))
    on_platform = stack.sandbox.task_orders[tid]

    async def listed(status: str) -> bool:
        return await stack.redis.zscore(keys.tasks_by_status(TAG, status), tid) is not None

    return {
        "cards": [normalized(c.text, tid) for c in cards],
        "thread": [normalized(m.text, tid) for m in stack.slack.thread(TASKS, cards[0].ts)] if cards else [],
        "creator": [normalized(m.text, tid) for m in stack.telegram.by_bot(CREATOR_CHAT)],
        "ephemerals": [e["text"] for e in stack.slack.ephemerals],
        "status": task.get("status"),
        "comments": (task.get("comments:merchant"), task.get("comments:creator")),
        "deadline_timer": None if due is None else due - float(task["deadline"]),
        "log": [(e["type"], e["side"], e["operator"]) for e in await stack.bridge.tasks.records.log_entries(TAG, tid)],
        "lists": {s: await listed(s) for s in ("all", "pending", "resolved", "timed_out")},
        "on_platform": (on_platform.status, [c["text"] for c in on_platform.comments]),
        "queued": await stack.redis.keys("*:outbox:task:*"),
        "dead": await stack.bridge.outbox.dead_letters(TAG),
    }


async def reset_tasks(stack: Stack) -> None:
    await reset(stack)
    stack.telegram.messages.clear()
    stack.telegram.calls.clear()
    stack.telegram._sent.clear()  # the chat's allowance starts afresh: runs start alike


async def raise_task(stack: Stack) -> str:
    await reset_tasks(stack)
    tid = await stack.sandbox.create_task_order("1001", "c-7001")
    await stack.settle()
    return tid


async def test_creating_a_task_order(stack: Stack, faults: RedisFaults) -> None:
    stack.bridge.event_handlers["task_order_created"] = faults.wrap(stack.bridge.tasks.on_created)
    created: list[str] = []

    async def prepare() -> None:
        await reset_tasks(stack)

    async def step(_: None) -> None:
        created.append(await stack.sandbox.create_task_order("1001", "c-7001"))
        await settle(stack)

    async def state(_: None) -> dict[str, Any]:
        return await task_state(stack, created[-1])

    _, done = await each_failure(stack, faults, prepare, step, state)
    assert len(done["cards"]) == 1 and len(done["creator"]) == 1 and done["status"] == "pending"
    assert done["log"] == [("created", "creator", "达人 小美 Xiaomei")] and done["deadline_timer"] == -7200


async def test_commenting(stack: Stack, faults: RedisFaults) -> None:
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    comment = faults.wrap(stack.bridge.tasks.comment)

    async def step(tid: str) -> None:
        card = card_ts(stack, tid)
        ts, _ = await stack.slack.user_message("U0MAIN1001", TASKS, "已安排补发", thread_ts=card)
        actor = Actor("slack", "U0MAIN1001", TASKS, card, ts)
        try:
            await comment(store, tid, "merchant", actor, "main-1001", "店长 Li", "已安排补发")
        except RedisConnectionError:
            await comment(store, tid, "merchant", actor, "main-1001", "店长 Li", "已安排补发")
        await settle(stack)

    _, done = await each_failure(stack, faults, lambda: raise_task(stack), step, lambda tid: task_state(stack, tid))
    assert done["comments"] == ("1", "0") and done["on_platform"] == ("pending", ["已安排补发"])
    assert done["log"][-1] == ("comment_merchant", "merchant", "店长 Li")
    assert any("已安排补发" in text for text in done["creator"]), "shown to the creator once"


async def test_a_file_shared_under_a_task_card(stack: Stack, faults: RedisFaults) -> None:
    """A merchant's message with a file under the card: a comment, and the file kept to be offered
    as evidence (B7) once, however often the message is handled."""
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    stack.bridge.event_handlers["slack.event"] = faults.wrap(stack.bridge.event_handlers["slack.event"])

    async def step(tid: str) -> None:
        waybill = stack.slack.add_file("waybill.png", PNG, "image/png")
        await stack.slack.user_message("U0MAIN1001", TASKS, "运单照片", thread_ts=card_ts(stack, tid), files=[waybill])
        await settle(stack)

    async def state(tid: str) -> dict[str, Any]:
        files = [f["name"] for f in await stack.bridge.tasks.thread_files(store, tid)]
        return await task_state(stack, tid) | {"files": files}

    _, done = await each_failure(stack, faults, lambda: raise_task(stack), step, state)
    assert done["files"] == ["waybill.png"] and done["comments"] == ("1", "0")
    assert done["on_platform"] == ("pending", ["运单照片"])


async def test_a_comment_the_platform_refuses_for_good(stack: Stack, faults: RedisFaults) -> None:
    """The outbox gives up on a call the platform refuses (422): one dead letter (a second would be
    sent twice by a replay of all), the author told once, the comment's slot free again."""
    stack.bridge.timer_handlers["outbox"] = faults.wrap(stack.bridge.outbox.handle_timer)

    async def step(tid: str) -> None:
        stack.sandbox.fail_next("POST", f"/task-orders/{tid}/comments", 422, times=10)  # each time asked
        await stack.slack.user_message("U0MAIN1001", TASKS, "这条平台不收", thread_ts=card_ts(stack, tid))
        await settle(stack)
        stack.sandbox._faults.clear()

    async def state(tid: str) -> dict[str, Any]:
        dead = [(d["job"]["kind"], normalized(d["reason"], tid)) for d in await stack.bridge.outbox.dead_letters(TAG)]
        told = [normalized(text, tid) for text in (await task_state(stack, tid))["ephemerals"]]
        return await task_state(stack, tid) | {"dead": dead, "ephemerals": told}

    _, done = await each_failure(stack, faults, lambda: raise_task(stack), step, state)
    assert done["comments"] == ("0", "0") and len(done["dead"]) == 1 and done["on_platform"] == ("pending", [])
    assert len(done["ephemerals"]) == 1 and "这条平台不收" not in "".join(done["creator"])


async def test_sending_a_comment_and_showing_it_once_the_platform_has_it(stack: Stack, faults: RedisFaults) -> None:
    """The outbox's side of a comment: to the platform, then (once accepted) logged and shown to the
    creator in Telegram, each once (B5), and its author's message marked ✅."""
    senders = stack.bridge.outbox.senders
    senders["bridge.comment_accepted"] = faults.wrap(senders["bridge.comment_accepted"])
    written: list[str] = []

    async def step(tid: str) -> None:
        ts, _ = await stack.slack.user_message("U0MAIN1001", TASKS, "已安排补发", thread_ts=card_ts(stack, tid))
        written.append(ts)
        await settle(stack)

    async def state(tid: str) -> dict[str, Any]:
        marks = [c.args["name"] for c in stack.slack.called("reactions.add")]
        return await task_state(stack, tid) | {"marked": stack.slack.message(TASKS, written[-1]).reactions,
                                               "marks": marks}  # fmt: skip

    tried, done = await each_failure(stack, faults, lambda: raise_task(stack), step, state)
    assert done["marked"] == ["white_check_mark"] and done["marks"] == ["white_check_mark"]
    assert tried >= 4
    assert done["comments"] == ("1", "0") and done["on_platform"] == ("pending", ["已安排补发"])
    assert done["log"][-1] == ("comment_merchant", "merchant", "店长 Li")
    assert sum("已安排补发" in text for text in done["creator"]) == 1


async def test_a_creators_comment_from_telegram(stack: Stack, faults: RedisFaults) -> None:
    """The creator answers the confirmation in Telegram, with a photo: one comment on the platform,
    counted and logged once, shown once in the merchant's thread, and the creator told once that the
    photo did not go with it."""
    stack.bridge.event_handlers["telegram.update"] = faults.wrap(stack.bridge.event_handlers["telegram.update"])

    async def step(tid: str) -> None:
        [confirmation] = [m for m in stack.telegram.by_bot(CREATOR_CHAT) if tid in m.text]
        photo = b"\x89PNG\r\n\x1a\n" + bytes(64)
        _, status = await stack.telegram.user_message(
            CREATOR_CHAT, CREATOR_CHAT, "买家在等", reply_to=confirmation.message_id, photo=photo
        )
        assert status == 200
        await settle(stack)

    tried, done = await each_failure(stack, faults, lambda: raise_task(stack), step, lambda tid: task_state(stack, tid))
    assert tried >= 4
    assert done["comments"] == ("0", "1") and done["on_platform"] == ("pending", ["买家在等"])
    assert done["log"][-1] == ("comment_creator", "creator", "达人 小美 Xiaomei")
    assert sum("买家在等" in text for text in done["thread"]) == 1
    assert sum(text.startswith("只有文字作为留言发送") for text in done["creator"]) == 1


async def test_resolving_from_slacks_modal(stack: Stack, faults: RedisFaults) -> None:
    """A submitted modal is stored and handled later: its files checked, then the decision queued
    once, whatever fails while it is handled."""
    stack.bridge.event_handlers["slack.event"] = faults.wrap(stack.bridge.event_handlers["slack.event"])

    async def step(tid: str) -> None:
        assert await stack.slack.block_action("U0MAIN1001", TASKS, card_ts(stack, tid), "task_resolve", tid) == 200
        view = stack.slack.views[-1]
        photo = stack.slack.add_file("parcel.png", PNG, "image/png")
        state: dict[str, dict[str, Any]] = {
            "solution": {"solution": {"type": "plain_text_input", "value": "已补发，顺丰 SF4"}},
            "confirm": {"confirm": {"type": "checkboxes", "selected_options": []}},
            "evidence": {"evidence": {"type": "file_input", "files": [photo]}},
        }
        assert (await stack.slack.submit_view("U0MAIN1001", view, state))[0] == 200
        await settle(stack)

    async def state(tid: str) -> dict[str, Any]:
        uploads = len(stack.sandbox.received("POST", "/media"))
        return await task_state(stack, tid) | {"uploads": uploads}

    tried, done = await each_failure(stack, faults, lambda: raise_task(stack), step, state)
    assert tried >= 4
    assert done["status"] == "resolved" and done["uploads"] == 1 and done["on_platform"][0] == "resolved"
    assert [entry[0] for entry in done["log"]] == ["created", "evidence_added", "resolved"]


async def test_processing(stack: Stack, faults: RedisFaults) -> None:
    """The merchant's decision reached the platform; finishing it here (the outbox's local job)."""
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    stack.bridge.outbox.senders["bridge.task_finish"] = faults.wrap(stack.bridge.tasks.on_finish_job)

    async def step(tid: str) -> None:
        actor = Actor("slack", "U0MAIN1001", TASKS, None, None)
        await stack.bridge.tasks.process(store, tid, "resolved", "已补发，顺丰 SF1", [], ("main-1001", "店长 Li"),
                                         actor, "view-1")  # fmt: skip
        await settle(stack)

    _, done = await each_failure(stack, faults, lambda: raise_task(stack), step, lambda tid: task_state(stack, tid))
    assert done["status"] == "resolved" and done["on_platform"][0] == "resolved" and done["deadline_timer"] is None
    assert done["lists"] == {"all": True, "pending": False, "resolved": True, "timed_out": False}
    assert done["log"][-1] == ("resolved", "merchant", "店长 Li")
    assert sum("SF1" in text for text in done["creator"]) == 1, "the creator is told once"


async def test_a_task_order_timing_out(stack: Stack, faults: RedisFaults) -> None:
    stack.bridge.timer_handlers["deadline"] = faults.wrap(stack.bridge.tasks.on_deadline_timer)

    async def step(tid: str) -> None:
        await stack.advance(36 * 3600)  # past the deadline, even one the night moved to 09:00

    _, done = await each_failure(stack, faults, lambda: raise_task(stack), step, lambda tid: task_state(stack, tid))
    assert done["status"] == "timed_out" and done["lists"]["timed_out"]
    assert [entry[0] for entry in done["log"]] == ["created", "reminder_sent", "reminder_sent", "timed_out"]
    assert sum("超时完结" in text for text in done["creator"]) == 1


async def test_a_comment_made_on_the_platform(stack: Stack, faults: RedisFaults) -> None:
    """A creator's comment made in the platform's own UI: counted (B5), logged, shown once."""
    stack.bridge.event_handlers["task_order_comment"] = faults.wrap(stack.bridge.tasks.on_comment)

    async def step(tid: str) -> None:
        await stack.sandbox.comment_on_platform(tid, "creator", "c-7001", "达人 小美 Xiaomei", "买家在催")
        await settle(stack)

    _, done = await each_failure(stack, faults, lambda: raise_task(stack), step, lambda tid: task_state(stack, tid))
    assert done["comments"] == ("0", "1") and done["log"][-1] == ("comment_creator", "creator", "达人 小美 Xiaomei")
    assert sum("买家在催" in text for text in done["thread"]) == 1, "shown in the merchant's thread once"


async def test_the_platform_processing_a_task_order(stack: Stack, faults: RedisFaults) -> None:
    """The merchant processed it in the platform's own UI: finished here as if done from Slack."""
    stack.bridge.event_handlers["task_order_processed"] = faults.wrap(stack.bridge.tasks.on_processed)

    async def step(tid: str) -> None:
        await stack.sandbox.process_on_platform(tid, "resolved", "已补发，顺丰 SF2")
        await settle(stack)

    _, done = await each_failure(stack, faults, lambda: raise_task(stack), step, lambda tid: task_state(stack, tid))
    assert done["status"] == "resolved" and done["deadline_timer"] is None
    assert done["lists"] == {"all": True, "pending": False, "resolved": True, "timed_out": False}
    assert done["log"][-1] == ("resolved", "merchant", "店长 Li")
    assert sum("SF2" in text for text in done["creator"]) == 1, "the creator is told once"


async def test_the_platform_timing_a_task_order_out(stack: Stack, faults: RedisFaults) -> None:
    """The platform's own timeout push (its clock, not the bridge's deadline timer)."""
    stack.bridge.event_handlers["task_order_timeout"] = faults.wrap(stack.bridge.tasks.on_timeout)
    assert stack.clock is not None

    async def step(tid: str) -> None:
        at = datetime.fromtimestamp(stack.clock.now(), UTC).isoformat()  # type: ignore[union-attr]
        data = {"shop_id": "1001", "task_id": tid, "timed_out_at": at}
        assert (await stack.sandbox.push("store", "1001", [("task_order_timeout", data)])).statuses == [200]
        await settle(stack)

    _, done = await each_failure(stack, faults, lambda: raise_task(stack), step, lambda tid: task_state(stack, tid))
    assert done["status"] == "timed_out" and done["deadline_timer"] is None and done["lists"]["timed_out"]
    assert done["log"][-1][0] == "timed_out" and sum("超时完结" in text for text in done["creator"]) == 1


async def test_the_morning_digest(stack: Stack, faults: RedisFaults) -> None:
    """Posted once a day (its job id names the day), and the next one scheduled, whatever fails."""
    stack.bridge.timer_handlers["digest"] = faults.wrap(stack.bridge.tasks.on_digest_timer)
    assert stack.clock is not None
    shanghai = ZoneInfo("Asia/Shanghai")

    async def prepare() -> str:
        await reset_tasks(stack)
        now = datetime.fromtimestamp(stack.clock.now(), shanghai)  # type: ignore[union-attr]
        await stack.advance_to((now + timedelta(days=1)).replace(hour=6, minute=13, second=0).timestamp())
        await stack.bridge.tasks.schedule_digests()
        tid = await stack.sandbox.create_task_order("1001", "c-7001")  # due tomorrow, moved to 09:00
        await stack.settle()
        return tid

    async def step(tid: str) -> None:
        await stack.advance(27 * 3600)  # today's digest at 08:30 (none due) and tomorrow's (this one)

    async def state(tid: str) -> dict[str, Any]:
        due = await stack.bridge.timers.due_at(keys.digest_timer(TAG))
        digests = [m for m in stack.slack.channel(TASKS) if m.text.startswith("🌅")]
        return {
            "digests": [re.sub(r"\d{4}-\d\d-\d\d", "<day>", normalized(m.text, tid)) for m in digests],
            "next": None if due is None else datetime.fromtimestamp(due, shanghai).strftime("%H:%M"),
            "dead": await stack.bridge.outbox.dead_letters(TAG),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 4
    assert done["next"] == "08:30" and [d.splitlines()[0] for d in done["digests"]] == [
        "🌅 今日（<day>）没有到期的任务单。",
        "🌅 今日到期的任务单（<day>）：1 条",
    ]


async def test_resolving_a_task_order_in_a_guided_conversation(stack: Stack, faults: RedisFaults) -> None:
    """Telegram's Resolve, step by step (solution, a photo, Done, Confirm): each update handled
    again after a failure ends as if handled once. No step is skipped, no file taken twice, no
    refusal for a tap that was taken."""
    stack.bridge.event_handlers["telegram.update"] = faults.wrap(stack.bridge.event_handlers["telegram.update"])
    tg = stack.telegram

    def newest() -> Any:
        return tg.by_bot(GROUP)[-1]

    async def tap(message: Any, data: str) -> None:
        assert await tg.tap(OWNER, GROUP, message.message_id, data) == 200
        await settle(stack)

    async def say(reply_to: Any, text: str = "", **files: Any) -> None:
        _, status = await tg.user_message(OWNER, GROUP, text, reply_to=reply_to.message_id, **files)
        assert status == 200
        await settle(stack)

    async def prepare() -> str:
        await reset_tasks(stack)
        tg.callback_answers.clear()
        tid = await stack.sandbox.create_task_order("1002", "c-7001")
        await stack.settle()
        return tid

    async def step(tid: str) -> None:
        card = next(m for m in tg.by_bot(GROUP) if tid in m.text and m.reply_markup)
        await tap(card, f"ur:{tid}")
        await tap(card, f"rs:{tid}")  # tapped again: starts over, the first question retired
        await say(newest(), "Reshipped by SF Express, waybill SF1234567890")
        evidence_step = newest()
        await say(evidence_step, photo=PNG)
        await tap(evidence_step, f"pd:{tid}")
        await tap(newest(), f"py:{tid}")

    async def conversation(tid: str) -> tuple[str | None, list[str]]:
        """Its step, and the answers of the marks it keeps (which message or tap differs by run)."""
        kept = {
            str(k): str(v)
            for k, v in (await stack.redis.hgetall(keys.task_resolve(STORE_1002, tid, str(OWNER)))).items()
        }
        return kept.get("step"), sorted(v for k, v in kept.items() if k.startswith("done:"))

    async def state(tid: str) -> dict[str, Any]:
        processed = stack.sandbox.task_orders[tid].solution
        return {
            "posted": [re.sub(r"photo-\d+", "photo-<n>", normalized(m.text, tid)) for m in tg.by_bot(GROUP)],
            "with_buttons": [normalized(m.text, tid) for m in tg.by_bot(GROUP) if m.reply_markup],
            "reactions": [m.reactions for m in tg.messages if m.chat_id == GROUP and m.reactions],
            "answers": [a.get("text") for a in tg.callback_answers],
            "processed": None if processed is None else (processed["result"], len(processed["evidence"])),
            "uploads": len(stack.sandbox.received("POST", "/media")),
            "status": await stack.redis.hget(keys.task(STORE_1002, tid), "status"),
            "conversation": await conversation(tid),
            "dead": await stack.bridge.outbox.dead_letters(STORE_1002),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 12
    assert done["processed"] == ("resolved", 1) and done["uploads"] == 1 and done["status"] == "resolved"
    sent = "Sent to the platform; the card shows the result once it accepts."
    assert done["conversation"] == ("ended", [sent]) and done["reactions"] == [["👍"]]
    assert done["answers"][-1] == sent, "the Confirm tap's answer, however often it was handled"
    assert sum("Step 1/3" in p for p in done["posted"]) == 2, "one question for each tap"
    assert sum("Step 2/3" in p for p in done["posted"]) == 1 and sum("Step 3/3" in p for p in done["posted"]) == 1
    assert not [p for p in done["with_buttons"] if "Step" in p], "every step's buttons retired once it was past"


async def test_a_guided_conversation_left_an_hour_ending(stack: Stack, faults: RedisFaults) -> None:
    """The timer that ends a Telegram Resolve conversation left an hour without a step: whatever
    fails, its question says once that it expired and loses its buttons, its state goes, and
    nothing is sent."""
    stack.bridge.timer_handlers["resolve"] = faults.wrap(stack.bridge.resolve.on_expiry_timer)
    tg = stack.telegram

    async def prepare() -> tuple[str, int]:
        await reset_tasks(stack)
        tid = await stack.sandbox.create_task_order("1002", "c-7001")
        await stack.settle()
        card = next(m for m in tg.by_bot(GROUP) if tid in m.text and m.reply_markup)
        assert await tg.tap(OWNER, GROUP, card.message_id, f"rs:{tid}") == 200
        await stack.settle()
        return tid, tg.by_bot(GROUP)[-1].message_id

    async def step(subject: tuple[str, int]) -> None:
        await stack.advance(3600 + 60)  # a failed run is tried again a few seconds later

    async def state(subject: tuple[str, int]) -> dict[str, Any]:
        tid, question = subject
        asked = tg.message(GROUP, question)
        return {
            "question": (normalized(asked.text, tid), asked.reply_markup, asked.edits),
            "kept": await stack.redis.exists(keys.task_resolve(STORE_1002, tid, str(OWNER))),
            "processed": stack.sandbox.task_orders[tid].solution,
            "dead": await stack.bridge.outbox.dead_letters(STORE_1002),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 4
    text, markup, edits = done["question"]
    assert "Step 1/3" in text and text.endswith("nothing was sent. To process it, use the task order card's buttons.")
    assert (markup, edits) == (None, 1)
    assert done["kept"] == 0 and done["processed"] is None and done["dead"] == []


async def test_sending_what_a_chat_queued(stack: Stack, faults: RedisFaults) -> None:
    """The outbox's own steps: a crash after Slack or the platform took a message and before the
    bridge recorded it does not send it twice (Slack: the post's metadata is looked up; the platform:
    the idempotency key)."""
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    stack.bridge.timer_handlers["outbox"] = faults.wrap(stack.bridge.outbox.handle_timer)

    async def prepare() -> str:
        cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "在吗"})
        await stack.bridge.drain()  # handled and queued; nothing sent yet
        return cid

    async def step(cid: str) -> None:
        await settle(stack)  # the root goes out
        root_ts = landed(stack, CHATS, f"slack:root:{cid}")[0].ts
        await stack.slack.user_message(AGENT_A, CHATS, "在的", thread_ts=root_ts)
        await settle(stack)  # the reply to the platform, its ✅, the header's update

    tried, done = await each_failure(stack, faults, prepare, step, lambda cid: chat_state(stack, cid))
    assert tried >= 12  # 6 calls
    assert len(done["roots"]) == 1 and done["to_platform"] == [{"type": "text", "text": "在的"}]
    assert done["reactions"] == [["white_check_mark"]] and "已回复" in done["roots"][0]


# -- the archive -----------------------------------------------------------------------------------


async def test_archiving_a_finished_chat_and_then_forgetting_it(stack: Stack, faults: RedisFaults) -> None:
    """The copy into the archive after the close, and the step that takes the chat out of Redis
    after its grace: a failure in either ends with one row holding everything and no state left."""
    stack.bridge.timer_handlers["archive"] = faults.wrap(stack.bridge.archiving.on_archive_timer)
    stack.bridge.timer_handlers["forget"] = faults.wrap(stack.bridge.timer_handlers["forget"])

    async def prepare() -> str:
        cid, root_ts = await open_chat(stack)
        await stack.slack.user_message(AGENT_A, CHATS, "在的", thread_ts=root_ts)
        await stack.settle()  # answered, and that copy archived
        return cid

    async def step(cid: str) -> None:
        await stack.sandbox.close_chat(cid)
        await stack.bridge.drain()  # closed; its copy is due a second later
        await stack.advance(keys.FINISHED_KEEP_SECONDS + 3600)

    async def state(cid: str) -> dict[str, Any]:
        rows = [row for row in await stack.bridge.archive.chats("1001") if row["conversation_id"] == cid]
        left = [k for k in map(str, await stack.redis.keys(f"*{cid}*")) if await stack.redis.ttl(k) == -1]
        return {
            "rows": [(r["status"], r["close_reason"], r["replies"], [m["text"] for m in r["messages"]]) for r in rows],
            "left_in_redis": sorted(normalized(k, cid) for k in left),
            "dead": await stack.bridge.outbox.dead_letters(TAG),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 6
    assert done["rows"] == [("closed", "platform_closed", 1, ["在吗", "在的"])] and done["left_in_redis"] == []


async def test_archiving_a_finished_task_order_and_then_forgetting_it(stack: Stack, faults: RedisFaults) -> None:
    """The same for a task order: one row with its log and comments, and no state left in Redis
    (its hash, log, files, comments, evidence and its place in every status list)."""
    stack.bridge.timer_handlers["archive"] = faults.wrap(stack.bridge.archiving.on_archive_timer)
    stack.bridge.timer_handlers["forget"] = faults.wrap(stack.bridge.timer_handlers["forget"])

    async def prepare() -> str:
        tid = await raise_task(stack)
        await stack.sandbox.comment_on_platform(tid, "creator", "c-7001", "达人 小美 Xiaomei", "买家在催")
        await stack.settle()
        return tid

    async def step(tid: str) -> None:
        await stack.sandbox.process_on_platform(tid, "resolved", "已补发，顺丰 SF3")
        await stack.bridge.drain()
        await stack.advance(keys.FINISHED_KEEP_SECONDS + 3600)

    async def state(tid: str) -> dict[str, Any]:
        rows = await stack.bridge.archive.tasks(task_id=tid)
        left = [k for k in map(str, await stack.redis.keys(f"*{tid}*")) if await stack.redis.ttl(k) == -1]
        listed = [
            s for s in ("all", "pending", "resolved") if await stack.redis.zscore(keys.tasks_by_status(TAG, s), tid)
        ]
        return {
            "rows": [(r["status"], r["solution"], len(r["log"]), len(r["comments"])) for r in rows],
            "left_in_redis": sorted(normalized(k, tid) for k in left) + listed,
            "dead": await stack.bridge.outbox.dead_letters(TAG),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 6
    assert done["rows"] == [("resolved", "已补发，顺丰 SF3", 3, 1)] and done["left_in_redis"] == []


# -- the operator's replay -------------------------------------------------------------------------


async def until_done(command: Callable[[], Awaitable[Any]]) -> None:
    """As an operator does: runs the command again after a failure until it says it is done."""
    while True:
        try:
            await command()
            return
        except RedisConnectionError:
            continue


async def test_replaying_dead_letters(stack: Stack, faults: RedisFaults) -> None:
    """``bridge dead-letters retry`` stopped at any point (a crash, a Redis error) and run again sends
    each letter once. Telegram keeps nothing a bot could look up, so a letter queued twice would be
    posted twice."""
    tg = stack.telegram
    replay = faults.wrap(stack.bridge.outbox.retry_dead_letter)

    async def prepare() -> str:
        await reset_tasks(stack)
        tg.missing_chats.add(GROUP)  # the bot was removed from the store's group: Telegram refuses
        cid = await stack.sandbox.open_chat("1002", {"type": "text", "text": "Can the buyer change the size?"})
        await settle(stack)
        assert len(await stack.bridge.outbox.dead_letters(STORE_1002)) >= 1
        tg.missing_chats.discard(GROUP)  # and added back
        return cid

    async def step(cid: str) -> None:
        await until_done(lambda: replay(STORE_1002, None))
        await settle(stack)

    async def state(cid: str) -> dict[str, Any]:
        return {
            "posted": [normalized(m.text, cid)[:60] for m in tg.by_bot(GROUP)],
            "dead": await stack.bridge.outbox.dead_letters(STORE_1002),
            "queued": await stack.redis.keys(f"{STORE_1002}:outbox:*"),
        }

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 6
    [header] = tg.by_bot(GROUP)
    assert "Can the buyer change the size?" in header.text and done["dead"] == [] and done["queued"] == []
    assert await stack.redis.hgetall(keys.dead_letter_replays(STORE_1002)) == {}


async def test_replaying_dead_events(stack: Stack, faults: RedisFaults) -> None:
    """``bridge dead-events retry`` stopped at any point and run again stores each dead event once:
    the chat a fixed handler opens lands in Slack once."""
    handlers = stack.bridge.event_handlers
    fixed = handlers["im_platform_message"]
    dead = DeadEvents(stack.redis)
    replay = faults.wrap(dead.retry)

    async def broken(event: StoredEvent) -> None:
        raise ValueError("a bug in the handler")

    async def prepare() -> str:
        handlers["im_platform_message"] = broken
        cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "在吗"})
        await stack.settle(horizon=40)  # every attempt, with its backoff
        handlers["im_platform_message"] = fixed  # the fix is deployed
        return cid

    async def step(cid: str) -> None:
        for tag in (TAG, STORE_1002):  # as the command goes through every endpoint
            await until_done(functools.partial(replay, tag, None))
        await settle(stack)

    async def state(cid: str) -> dict[str, Any]:
        return await chat_state(stack, cid) | {"dead_events": await dead.entries.read(TAG)}

    tried, done = await each_failure(stack, faults, prepare, step, state)
    assert tried >= 6
    assert len(done["roots"]) == 1 and done["status"] == "open" and done["dead_events"] == []
