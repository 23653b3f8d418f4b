"""Inbound message push (PLATFORM-API §1): every status, signatures, atomic and deduplicated storage."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bridge.app.redis_server import EmbeddedRedis
from bridge.engine import keys
from bridge.engine.clock import ManualClock
from connectors.platform.signing import sign
from tests.conftest import EXAMPLE_CONFIG, Stack, start_stack, stored_fields

KEY, SECRET = "demo-app-key-1001", "demo-app-secret-1001"
STREAM = keys.events("{store:1001}")


def message(msg_id: str = "7301-1", shop_id: str = "1001", conversation: str = "conv-1", **over: Any) -> dict[str, Any]:
    data = {
        "shop_id": shop_id,
        "conversation_id": conversation,
        "message_id": f"pm-{msg_id}",
        "sent_at": "2026-11-23T10:00:00+08:00",
        "sender": {"agent_id": "cs-1", "name": "小飞"},
        "content": {"type": "text", "text": "您好"},
    } | over
    return {"tag": "im_platform_message", "msg_id": msg_id, "data": json.dumps(data, ensure_ascii=False)}


async def post(
    stack: Stack,
    records: Any,
    *,
    path: str = "/webhooks/platform/1001",
    key: str = KEY,
    secret: str = SECRET,
    body: bytes | None = None,
    signature: str | None = None,
) -> tuple[int, dict[str, Any]]:
    raw = body if body is not None else json.dumps(records, ensure_ascii=False).encode()
    headers = {"app-id": key, "event-sign": signature or sign(key, raw, secret), "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(stack.url + path, data=io.BytesIO(raw), headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def stored(stack: Stack, stream: str = STREAM) -> list[dict[str, str]]:
    return await stored_fields(stack.redis, stream)


async def scraped(stack: Stack) -> dict[tuple[str, str], float]:
    """What Prometheus would read from ``/metrics`` of the pushes: (series, its one label) → value."""
    async with aiohttp.ClientSession() as http, http.get(stack.url + "/metrics") as resp:
        text = await resp.text()
    return {(s.name, next(iter(s.labels.values()), "")): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name in ("feige_pushes_total", "feige_push_redeliveries_total")}  # fmt: skip


def increase(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


# -- signatures ------------------------------------------------------------------------------


async def test_valid_push_is_stored_then_acknowledged(stack: Stack) -> None:
    assert await post(stack, [message()]) == (200, {"code": 0, "msg": "success"})
    [entry] = await stored(stack)
    assert entry["tag"] == "im_platform_message" and entry["msg_id"] == "7301-1"
    assert entry["thread"] == "chat:conv-1" and entry["seq"] == "1"
    assert json.loads(entry["data"])["conversation_id"] == "conv-1"


async def test_upper_case_signature_is_accepted(stack: Stack) -> None:
    raw = json.dumps([message()]).encode()
    assert (await post(stack, None, body=raw, signature=sign(KEY, raw, SECRET).upper()))[0] == 200


@pytest.mark.parametrize(
    ("change", "status", "msg"),
    [
        ({"key": "someone-elses-key"}, 401, "app-id does not match store 1001"),
        ({"secret": "wrong-secret"}, 401, "event-sign does not match"),
        ({"signature": "0" * 32}, 401, "event-sign does not match"),
    ],
)
async def test_bad_credentials_are_401_and_store_nothing(
    stack: Stack, change: dict[str, str], status: int, msg: str
) -> None:
    code, body = await post(stack, [message()], **change)  # type: ignore[arg-type]
    assert code == status and body["code"] == status and body["msg"].startswith(msg)
    assert await stored(stack) == []


async def test_body_altered_by_one_byte_is_refused(stack: Stack) -> None:
    raw = json.dumps([message()]).encode()
    signature = sign(KEY, raw, SECRET)
    altered = raw.replace(b"conv-1", b"conv-2")
    assert len(altered) == len(raw)
    assert (await post(stack, None, body=altered, signature=signature))[0] == 401
    assert await stored(stack) == []


async def test_rotated_secrets_are_all_accepted(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    tree = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    tree["stores"][0]["platform"]["app_secrets"] = ["new-secret", "old-secret"]
    path = tmp_path / "rotating.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    s = await start_stack(redis_url, path, run_workers=False)
    try:
        assert (await post(s, [message("a")], secret="old-secret"))[0] == 200
        assert (await post(s, [message("b")], secret="new-secret"))[0] == 200
        assert (await post(s, [message("c")], secret=SECRET))[0] == 401
        assert [e["msg_id"] for e in await stored(s)] == ["a", "b"]
    finally:
        await s.stop()


# -- statuses ----------------------------------------------------------------------------------


async def test_verification_ping_is_answered_and_stores_nothing(stack: Stack) -> None:
    assert await post(stack, [{"tag": "0", "msg_id": "", "data": ""}]) == (200, {"code": 0, "msg": "success"})
    assert await stored(stack) == []


async def test_unknown_store_is_404(stack: Stack) -> None:
    code, body = await post(stack, [message()], path="/webhooks/platform/9999")
    assert (code, body) == (404, {"code": 404, "msg": "unknown store '9999'"})


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        (b"{not json", "body is not JSON"),
        (b'{"tag": "x"}', "body must be a JSON array of records"),
        (json.dumps([message(), {"msg_id": "2", "data": "{}"}]).encode(), "record 1: missing tag"),
        (json.dumps([{"tag": "im_platform_message", "data": "{}"}]).encode(), "record 0: missing msg_id"),
        (json.dumps([{"tag": "im_platform_message", "msg_id": "1"}]).encode(), "record 0: missing data"),
        (json.dumps([{"tag": "x", "msg_id": "1", "data": "{oops"}]).encode(), "record 0: data is not decodable JSON"),
        (
            json.dumps([message("1"), message("2", shop_id="1002")]).encode(),
            "record 1: shop_id '1002' is not this store's",
        ),
        (
            # A kind of message added later is taken (shown as a pointer to Feige); one that breaks its own kind is not.
            json.dumps([message(content={"type": "text"})]).encode(),
            "record 0: data.content.text.text: Field required",
        ),
    ],
)
async def test_malformed_pushes_are_400_with_index_and_reason(stack: Stack, body: bytes, msg: str) -> None:
    code, answer = await post(stack, None, body=body)
    assert code == 400 and answer["code"] == 400
    assert answer["msg"].startswith(msg), answer["msg"]
    assert await stored(stack) == [], "nothing of a refused push is stored"


async def test_creator_endpoint_refuses_another_creators_task(stack: Stack) -> None:
    data = {"shop_id": "1001", "task_id": "T1", "creator": {"id": "c-other"}}
    record = {"tag": "x_future_tag", "msg_id": "1", "data": json.dumps(data)}
    code, answer = await post(
        stack, [record], path="/webhooks/creator/c-7001", key="demo-app-key-c7001", secret="demo-app-secret-c7001"
    )
    assert code == 400 and answer["msg"] == "record 0: creator.id 'c-other' is not this creator's (c-7001)"


async def test_unknown_tag_is_stored_and_acknowledged_then_ignored(stack: Stack) -> None:
    record = {"tag": "im_future_feature", "msg_id": "9", "data": json.dumps({"shop_id": "1001", "x": 1})}
    assert (await post(stack, [record]))[0] == 200
    assert [e["tag"] for e in await stored(stack)] == ["im_future_feature"]
    assert await stack.bridge.drain() == 1
    assert stack.bridge.consumer.stats.ignored == 1
    assert await stored(stack) == [], "handled entries leave the stream"


async def test_body_over_one_mib_is_413(stack: Stack) -> None:
    big = json.dumps([message(text="x" * (1024 * 1024))]).encode()
    code, answer = await post(stack, None, body=big)
    assert code == 413 and answer["msg"] == "push body is larger than 1048576 bytes"
    assert await stored(stack) == []


async def test_redis_down_is_503_and_nothing_half_written(redis_url: str, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r", appendonly=True).start()
    s = await start_stack(server.url, run_workers=False)
    try:
        before = await scraped(s)
        server.kill()
        code, answer = await post(s, [message("a"), message("b")])
        assert code == 503 and answer == {"code": 503, "msg": "storage unavailable, please redeliver"}
        server = EmbeddedRedis(tmp_path / "r", appendonly=True, port=server.port).start()
        assert await stored(s) == []
        assert (await post(s, [message("a"), message("b")]))[0] == 200, "the redelivery is taken"
        assert [e["msg_id"] for e in await stored(s)] == ["a", "b"]
        counted = increase(before, await scraped(s))
        assert counted == {("feige_pushes_total", "503"): 1, ("feige_pushes_total", "200"): 1}, "what the alert reads"
    finally:
        await s.stop()
        server.stop()


# -- storage -----------------------------------------------------------------------------------


async def test_redelivered_push_is_acknowledged_and_changes_nothing(stack: Stack) -> None:
    before = await scraped(stack)
    push = [message("a"), message("b", conversation="conv-2")]
    assert (await post(stack, push))[0] == 200
    assert (await post(stack, push))[0] == 200
    assert (await post(stack, [message("a"), message("c")]))[0] == 200
    assert (await post(stack, push, secret="wrong"))[0] == 401
    assert [e["msg_id"] for e in await stored(stack)] == ["a", "b", "c"]
    assert await stack.redis.zcard(keys.seen("{store:1001}")) == 3
    assert increase(before, await scraped(stack)) == {
        ("feige_pushes_total", "200"): 3, ("feige_pushes_total", "401"): 1,
        ("feige_push_redeliveries_total", "store:1001"): 3,
    }  # fmt: skip


async def test_msg_ids_are_remembered_seven_days(stack: Stack) -> None:
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    assert (await post(stack, [message("old")]))[0] == 200
    clock.advance(7 * 24 * 3600 - 1)
    assert (await post(stack, [message("old"), message("new")]))[0] == 200
    assert [e["msg_id"] for e in await stored(stack)] == ["old", "new"], "a redelivery within 7 days is dropped"
    clock.advance(2)
    assert (await post(stack, [message("newer")]))[0] == 200
    assert await stack.redis.zscore(keys.seen("{store:1001}"), "old") is None, "forgotten after 7 days"
    assert await stack.redis.zscore(keys.seen("{store:1001}"), "new") is not None


async def test_hundred_records_are_stored_all_or_nothing(stack: Stack) -> None:
    bad = [message(str(i), conversation=f"conv-{i % 7}") for i in range(99)] + [message("99", shop_id="1002")]
    code, answer = await post(stack, bad)
    assert code == 400 and answer["msg"].startswith("record 99:")
    assert await stored(stack) == []
    good = [message(str(i), conversation=f"conv-{i % 7}") for i in range(100)]
    assert (await post(stack, good))[0] == 200
    entries = await stored(stack)
    assert len(entries) == 100
    seqs = [int(e["seq"]) for e in entries if e["thread"] == "chat:conv-3"]
    assert seqs == list(range(1, len(seqs) + 1)), "per-thread sequence numbers are contiguous"


# -- arbitrary input ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
    app_id=st.sampled_from([KEY, "", "other"]),
    signature=st.one_of(st.just("valid"), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)),
    path=st.sampled_from(["/webhooks/platform/1001", "/webhooks/platform/1002", "/webhooks/creator/c-7001"]),
)
async def test_arbitrary_input_never_5xx_and_never_stores_unsigned(
    stack: Stack, body: bytes, app_id: str, signature: str, path: str
) -> None:
    before = await stack.redis.dbsize()
    valid = signature == "valid" and app_id == KEY and path.endswith("/1001")
    headers = {"app-id": app_id, "event-sign": sign(KEY, body, SECRET) if signature == "valid" else signature}
    async with aiohttp.ClientSession() as http, http.post(stack.url + path, data=body, headers=headers) as resp:
        assert resp.status < 500, await resp.text()
        answer = await resp.json()
        assert set(answer) == {"code", "msg"}
    if not valid:
        assert resp.status != 200 or signature == "valid"
        assert await stack.redis.dbsize() == before, "stored something without a valid signature"


async def test_an_explanation_over_the_platforms_limit_is_refused_naming_the_field(stack: Stack) -> None:
    """B1: the platform sends at most 100 characters; one more breaks its contract."""
    at_the_limit = await stack.sandbox.create_task_order("1001", "c-7001", explanation_message="话" * 100)
    assert stack.sandbox.deliveries[-2].statuses == [200], at_the_limit
    records = stack.sandbox.deliveries[-1].records
    records[0]["data"] = json.dumps(json.loads(records[0]["data"]) | {"explanation_message": "话" * 101})
    records[0]["msg_id"] = "a-new-one"  # not a redelivery
    code, answer = await post(stack, records, path="/webhooks/creator/c-7001", key="demo-app-key-c7001",
                              secret="demo-app-secret-c7001")  # fmt: skip
    assert code == 400 and answer["msg"].startswith(
        "record 0: data.explanation_message: String should have at most 100"
    )
