"""Slack drops an event after its last retry (about five minutes after the first try). While Redis
is down every webhook answers 503 (test_backpressure.py); at a Slack event's last try the bridge
holds it on local disk instead, answers 200, and moves it into the event log once Redis is back:
handled once, however often the move is made, by this process or by another after a crash."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from bridge.app import cli
from bridge.app.redis_server import EmbeddedRedis
from bridge.engine import keys
from bridge.engine.clock import ManualClock
from bridge.engine.endpoint import Endpoint
from bridge.engine.held import Holding
from bridge.engine.ingest import IncomingRecord
from tests.conftest import EXAMPLE_CONFIG, Stack, start_stack, stored_fields, until

CHATS, TASKS, TAG = "C0CHATS1001", "C0TASKS1001", "{store:1001}"


class Outage:
    """A stack on a Redis that a test stops (``kill``) and starts again on its data (``restart``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server = EmbeddedRedis(directory, appendonly=True).start()

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server = EmbeddedRedis(self.directory, appendonly=True, port=self.server.port).start()


@pytest.fixture(params=["http"])
async def outage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Stack, Outage]]:
    """With ``socket``, Slack's events come over Socket Mode (a retry's number in its envelope)."""
    redis = Outage(tmp_path / "r")
    config = EXAMPLE_CONFIG
    if request.param == "socket":
        tree = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        tree["slack"] |= {"socket_mode": True, "app_token": "xapp-demo-app-token"}
        config = tmp_path / "socket.yaml"
        config.write_text(yaml.safe_dump(tree, allow_unicode=True))
    s = await start_stack(redis.server.url, config, clock=ManualClock(), run_workers=False)
    if request.param == "socket":
        await s.slack.socket_connected.wait()
    try:
        yield s, redis
    finally:
        await s.stop()
        redis.server.stop()


def held_lines(stack: Stack) -> list[str]:
    return [line for path in sorted(stack.bridge.holding.directory.glob("*.jsonl")) if path.is_file()
            for line in path.read_text().splitlines()]  # fmt: skip


async def slack_tries(stack: Stack, text: str, thread_ts: str) -> tuple[str, list[int]]:
    """A person's message and every try Slack makes while it is answered other than 200: the first,
    then its retries 1, 2 and 3 (the last). Returns the event id and the statuses."""
    _, status = await stack.slack.user_message("U0AGENTA", CHATS, text, thread_ts=thread_ts)
    event_id, statuses = stack.slack.last_event_id, [status]
    for retry in (1, 2, 3):
        if statuses[-1] == 200:
            break
        _, status = await stack.slack.user_message("U0AGENTA", CHATS, text, thread_ts=thread_ts, retry_of=event_id,
                                                   retry_num=retry)  # fmt: skip
        statuses.append(status)
    return event_id, statuses


@pytest.mark.parametrize("outage", ["http", "socket"], indirect=True)
async def test_a_slack_event_at_its_last_try_while_redis_is_down_is_held_then_handled_once(
    outage: tuple[Stack, Outage], tmp_path: Path
) -> None:
    s, server = outage
    cid = await s.sandbox.open_chat("1001")
    await s.settle()
    root = s.slack.channel(CHATS)[-1]
    server.kill()
    event_id, statuses = await slack_tries(s, "在的，马上发货", root.ts)
    # Not taken (503 over HTTP, no ack over the socket) while Slack would deliver again; held at its
    # last try, not dropped.
    assert len(statuses) == 4 and 200 not in statuses[:3] and statuses[3] == 200, statuses
    [line] = held_lines(s)
    assert event_id in line, "on disk before Slack was answered"
    async with s.bridge.http().get(f"{s.url}/readyz") as resp:
        ready = await resp.json()
    assert resp.status == 503 and ready["deliveries_held_on_disk"] == 1, "the operator sees what waits"
    assert await held_on_disk_metric(s) == 1.0, "and the alert on the metric can say so"
    # Redis is back: the move (every 2 s in a running process, which may be the one that does it;
    # here also at once) stores it, and it is handled.
    server.restart()
    await s.bridge.holding.move()
    await s.settle()
    assert s.merchant_texts(cid) == ["在的，马上发货"]
    assert held_lines(s) == [], "moved, so no longer held"
    assert await s.bridge.holding.move() == 0
    async with s.bridge.http().get(f"{s.url}/readyz") as resp:
        assert resp.status == 200 and "deliveries_held_on_disk" not in await resp.json()
    assert await held_on_disk_metric(s) == 0.0


async def held_on_disk_metric(s: Stack) -> float:
    async with s.bridge.http().get(f"{s.url}/metrics") as resp:
        text = await resp.text()
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith("feige_held_on_disk ")]
    return float(value)


async def test_deliveries_held_by_a_process_that_died_are_taken_over_and_stored_once(
    outage: tuple[Stack, Outage], tmp_path: Path
) -> None:
    """A process killed while holding leaves its file; another process takes it over. A move made
    twice (a crash after storing, before the file was emptied) stores each delivery once."""
    s, server = outage
    cid = await s.sandbox.open_chat("1001")
    await s.settle()
    root = s.slack.channel(CHATS)[-1]
    server.kill()
    assert (await slack_tries(s, "已补发", root.ts))[1][-1] == 200
    [held] = list(s.bridge.holding.directory.glob("*.jsonl"))
    # What a killed process leaves: its file, and no lock on it (a lock ends with its process).
    dead = tmp_path / "dead"
    dead.mkdir()
    shutil.copy(held, dead / held.name)
    shutil.copy(held, dead / f"0-{held.name}")  # the same delivery again, as a move cut short leaves it
    server.restart()
    other = Holding(dead, s.bridge.event_log)
    assert await other.move() == 2, "both orphaned files taken over"
    assert list(dead.iterdir()) == [], "and deleted once moved"
    await s.bridge.holding.move()  # the live process's own, moved by it
    await s.settle()
    assert s.merchant_texts(cid) == ["已补发"], "stored once, however often it was moved"


async def test_a_live_process_file_is_not_taken_over_and_a_cut_line_is_skipped(
    outage: tuple[Stack, Outage], tmp_path: Path
) -> None:
    s, server = outage
    server.kill()
    record = IncomingRecord("slack.event", "EvX1", "C0CHATS1001:1", '{"type": "event_callback"}')
    await s.bridge.holding.hold(Endpoint("destination", "slack"), [record])
    [held] = list(s.bridge.holding.directory.glob("*.jsonl"))
    with held.open("ab") as f:
        f.write(b'{"endpoint": ["destination", "sl')  # a crash in the middle of a line (answered 503)
    server.restart()
    other = Holding(s.bridge.holding.directory, s.bridge.event_log)
    assert await other.move() == 0 and held.exists(), "a live process's file is its own to move"
    await s.bridge.holding.move()
    assert await s.bridge.event_log.store(Endpoint("destination", "slack"), [record]) == 0, "the whole line moved"
    assert held.stat().st_size == 0, "the cut one skipped, not kept forever"


async def test_with_nowhere_to_hold_it_the_last_try_is_answered_503_as_before(
    outage: tuple[Stack, Outage],
) -> None:
    s, server = outage
    await s.sandbox.open_chat("1001")
    await s.settle()
    root = s.slack.channel(CHATS)[-1]
    s.bridge.holding.directory.rmdir()
    s.bridge.holding.directory.write_text("not a directory")  # a full or read-only disk alike
    server.kill()
    _, statuses = await slack_tries(s, "在的", root.ts)
    assert statuses == [503, 503, 503, 503], "nothing acknowledged that is not kept somewhere"


async def test_a_slash_command_is_not_held_slack_does_not_send_it_again(outage: tuple[Stack, Outage]) -> None:
    """Commands and clicks are never retried by Slack: the person sees it failed and tries again,
    so holding one would act on it behind their back, maybe twice."""
    s, server = outage
    server.kill()
    status, _ = await s.slack.slash_command("U0MAIN1001", TASKS, "/tasks", "")
    assert status == 503 and held_lines(s) == []


async def test_a_reply_held_before_its_window_ends_counts_as_received_then(outage: tuple[Stack, Outage]) -> None:
    """Held at the deadline's last second and moved after it: judged by when the bridge took it,
    as any stored reply is (test_durable_intake.py), not by when Redis was back."""
    s, server = outage
    assert s.clock is not None
    cid, root, deadline = await s.chat_a_second_before_its_deadline()
    server.kill()
    assert (await slack_tries(s, "来了", root))[1][-1] == 200
    server.restart()
    s.clock.set(deadline + 3)
    await s.bridge.holding.move()
    await s.settle()
    assert s.merchant_texts(cid) == ["来了"]
    assert await s.redis.hget(keys.chat(TAG, cid), "status") == "open", "answered in time, not closed"


async def test_a_delivery_held_while_a_move_is_under_way_stays_held_until_moved(
    outage: tuple[Stack, Outage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis is asked with the file unlocked (a slow answer must not hold up a Slack's last try for
    3 s): what is held meanwhile is not cut off with what was moved."""
    s, server = outage
    slack = Endpoint("destination", "slack")

    def event(event_id: str) -> IncomingRecord:
        return IncomingRecord("slack.event", event_id, "C0CHATS1001:1", '{"type": "event_callback"}')

    server.kill()
    await s.bridge.holding.hold(slack, [event("EvA")])
    server.restart()
    store = s.bridge.event_log.store

    async def store_while_slack_delivers(
        endpoint: Endpoint, records: list[IncomingRecord], received_ms: int | None = None
    ) -> int:
        stored = await store(endpoint, records, received_ms)
        if records[0].msg_id == "EvA":
            await s.bridge.holding.hold(slack, [event("EvB")])  # lands while the move waits for Redis
        return stored

    monkeypatch.setattr(s.bridge.event_log, "store", store_while_slack_delivers)
    await s.bridge.holding.move()
    assert any("EvB" in line for line in held_lines(s)), "still held"
    monkeypatch.undo()
    await s.bridge.holding.move()
    assert held_lines(s) == []
    stored = [e["msg_id"] for e in await stored_fields(s.redis, keys.events(slack.tag))]
    assert stored == ["EvA", "EvB"], "each once, in the order they came"


async def test_a_held_file_that_cannot_be_moved_is_logged_and_the_moving_goes_on(
    outage: tuple[Stack, Outage], caplog: pytest.LogCaptureFixture
) -> None:
    """The process's own loop moves what it holds as soon as it holds it (Redis is up here); a
    file it cannot read is said in the log, and does not stop the loop for what comes after."""
    s, _ = outage
    (s.bridge.holding.directory / "0-not-a-file.jsonl").mkdir(parents=True)
    slack = Endpoint("destination", "slack")
    for event_id in ("EvC", "EvD"):
        record = IncomingRecord("slack.event", event_id, "C0CHATS1001:1", '{"type": "event_callback"}')
        await s.bridge.holding.hold(slack, [record])
        await until(lambda: held_lines(s) == [], f"{event_id} moved by the loop")
    assert [e["msg_id"] for e in await stored_fields(s.redis, keys.events(slack.tag))] == ["EvC", "EvD"]
    assert "could not be moved; trying again" in caplog.text


def test_bridge_check_warns_when_nothing_could_be_held(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A held_dir the process cannot write in is found before an outage needs it, not during one."""
    (tmp_path / "a-file").write_text("")
    tree = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    tree["server"]["held_dir"] = str(tmp_path / "a-file" / "held")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tree, allow_unicode=True))
    assert cli.main(["check", "--config", str(config)]) == 0, "a warning, not an error"
    assert f"warning: server.held_dir: {tmp_path / 'a-file'} is not a directory" in capsys.readouterr().out
    tree["server"]["held_dir"] = str(tmp_path / "not-yet" / "held")  # made when first needed
    config.write_text(yaml.safe_dump(tree, allow_unicode=True))
    assert cli.main(["check", "--config", str(config)]) == 0
    assert "held_dir" not in capsys.readouterr().out
