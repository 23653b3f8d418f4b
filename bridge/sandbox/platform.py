"""The platform sandbox: a local, stateful stand-in for the platform side of PLATFORM-API.md.

It serves the outbound API the bridge calls (conversations that close after the reply window, the
10-comments-per-side limit, process once, idempotency keys, media type and size checks) and pushes
signed events to the bridge, redelivering until it answers success, as the platform does. Everything
it receives is recorded for tests and the demo to look at. Faults can be injected (``fail_next``).

Run it alone with ``bridge sandbox platform --config PATH``; tests and the demo start it in-process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from bridge.config import BridgeConfig, PlatformCredentials
from bridge.engine.clock import Clock, SystemClock
from bridge.engine.listen import LocalServer
from connectors.platform.signing import sign
from rules.comments import COMMENTS_PER_SIDE  # the platform keeps the same limits
from rules.evidence import MAX_EVIDENCE_FILES, MAX_VIDEO_BYTES, SNIFF_BYTES, media_refusal, sniff_media

log = logging.getLogger(__name__)


@dataclass
class Recorded:
    method: str
    path: str
    caller: str
    idempotency_key: str | None
    body: dict[str, Any]
    status: int
    response: dict[str, Any]
    at: float
    replayed: bool = False


PushSender = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, bytes]]]
"""Sends one signed push (URL, body, headers) and returns the bridge's status and answer; raises
``aiohttp.ClientError`` or ``OSError`` when the push did not get an answer."""


@dataclass
class Delivery:
    endpoint: str
    records: list[dict[str, Any]]
    statuses: list[int] = field(default_factory=list)
    delivered: bool = False


@dataclass
class Conversation:
    store_id: str
    conversation_id: str
    window_seconds: float
    awaiting_since: float | None = None
    closed_reason: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TaskOrder:
    store_id: str
    creator_id: str
    data: dict[str, Any]
    status: str = "pending"
    comments: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    solution: dict[str, Any] | None = None


@dataclass
class _Fault:
    method: str
    path_prefix: str
    status: int
    times: int
    retry_after: float | None


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _err(status: int, msg: str) -> tuple[int, dict[str, Any]]:
    return status, {"code": status, "msg": msg}


class PlatformSandbox(LocalServer):
    def __init__(
        self,
        config: BridgeConfig,
        bridge_url: str,
        *,
        clock: Clock | None = None,
        window_grace_seconds: float = 0.0,
        push_retry_seconds: float = 0.05,
        push_max_attempts: int = 12,
    ) -> None:
        self.config = config
        self.bridge_url = bridge_url.rstrip("/")
        self.clock: Clock = clock or SystemClock()
        self.window_grace_seconds = window_grace_seconds
        self.push_retry_seconds = push_retry_seconds
        self.push_max_attempts = push_max_attempts
        self.send_push: PushSender = self._send_push_with_aiohttp
        """How pushes reach the bridge: aiohttp by default; a load generator may send its own way."""
        self.records: list[Recorded] = []
        self.listeners: list[Callable[[Recorded], None]] = []
        """Called with each API request recorded (benchmarks wait on these instead of polling)."""
        self.deliveries: list[Delivery] = []
        self.conversations: dict[str, Conversation] = {}
        self.task_orders: dict[str, TaskOrder] = {}
        self.media: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._faults: list[_Fault] = []
        self._ids = itertools.count(1)
        self._run = secrets.token_hex(3)
        super().__init__(web.Application(client_max_size=MAX_VIDEO_BYTES + 1024 * 1024))
        self.app.router.add_post("/im/conversations/{cid}/messages", self._api(self._send_message))
        self.app.router.add_post("/media", self._api(self._upload_media))
        self.app.router.add_post("/task-orders/{tid}/comments", self._api(self._add_comment))
        self.app.router.add_post("/task-orders/{tid}/process", self._api(self._process))
        self.app.router.add_get("/task-orders/{tid}", self._api(self._get_task_order))
        self.app.router.add_get("/_sandbox/records", self._control_records)
        self.app.router.add_post("/_sandbox/chats", self._control_open_chat)
        self.app.router.add_post("/_sandbox/chats/{cid}/messages", self._control_chat_message)
        self.app.router.add_post("/_sandbox/chats/{cid}/close", self._control_close_chat)
        self.app.router.add_post("/_sandbox/task-orders", self._control_task_order)

    # -- lifecycle -----------------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        # Unique across runs too: the platform's ids never repeat, and the bridge dedupes on them.
        return f"{prefix}{self._run}{next(self._ids):04d}"

    # -- fault injection and inspection ----------------------------------------------------------

    def fail_next(
        self, method: str, path_prefix: str, status: int, times: int = 1, retry_after: float | None = None
    ) -> None:
        self._faults.append(_Fault(method.upper(), path_prefix, status, times, retry_after))

    def received(self, method: str | None = None, path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.records if (method is None or r.method == method) and r.path.startswith(path_prefix)]

    async def _control_records(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": [r.__dict__ for r in self.records],
                "deliveries": [d.__dict__ for d in self.deliveries],
            }
        )

    async def _control_body(self, request: web.Request) -> dict[str, Any]:
        body = await self._json(request) if request.can_read_body else {}
        if body is None:
            raise web.HTTPBadRequest(text="JSON object expected")
        return body

    async def _control_open_chat(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        text = body.get("text")
        try:
            cid = await self.open_chat(str(body.get("store_id", "")), {"type": "text", "text": text} if text else None)
        except KeyError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        return web.json_response({"conversation_id": cid, "delivery": self.deliveries[-1].__dict__})

    async def _control_chat_message(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        cid = request.match_info["cid"]
        if cid not in self.conversations:
            raise web.HTTPNotFound(text=f"no conversation {cid}")
        delivery = await self.chat_message(cid, {"type": "text", "text": str(body.get("text", ""))})
        return web.json_response({"delivery": delivery.__dict__})

    async def _control_close_chat(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if cid not in self.conversations:
            raise web.HTTPNotFound(text=f"no conversation {cid}")
        return web.json_response({"delivery": (await self.close_chat(cid)).__dict__})

    async def _control_task_order(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        store_id, creator_id = str(body.pop("store_id", "")), str(body.pop("creator_id", ""))
        try:
            tid = await self.create_task_order(store_id, creator_id, **body)
        except KeyError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        return web.json_response({"task_id": tid})

    async def run_expiry(self, every_seconds: float = 1.0) -> None:
        """Standalone mode: close chats whose window ran out, as the platform does by itself."""
        while True:
            await asyncio.sleep(every_seconds)
            await self.expire_windows()

    # -- the API ------------------------------------------------------------------------------

    def _caller(self, request: web.Request) -> tuple[str, PlatformCredentials] | None:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        for store in self.config.stores:
            if store.platform.api_token == token:
                return f"store:{store.id}", store.platform
        for creator in self.config.creators:
            if creator.platform.api_token == token:
                return f"creator:{creator.id}", creator.platform
        return None

    def _api(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.Response:
            caller = self._caller(request)
            if caller is None:
                return web.json_response({"code": 401, "msg": "unknown or missing bearer token"}, status=401)
            who = caller[0]
            key = request.headers.get("Idempotency-Key")
            for fault in self._faults:
                if fault.times > 0 and request.method == fault.method and request.path.startswith(fault.path_prefix):
                    fault.times -= 1
                    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                    body = {"code": fault.status, "msg": "injected fault"}
                    self._record(
                        Recorded(request.method, request.path, who, key, {}, fault.status, body, self.clock.now())
                    )
                    return web.json_response(body, status=fault.status, headers=headers)
            if key is not None and (who, key) in self._idempotent:
                status, body = self._idempotent[(who, key)]
                self._record(Recorded(request.method, request.path, who, key, {}, status, body, self.clock.now(), True))
                return web.json_response(body, status=status)
            payload: dict[str, Any]
            status, body, payload = await handler(request, who)
            if key is not None and (200 <= status < 300 or (400 <= status < 500 and status != 429)):
                self._idempotent[(who, key)] = (status, body)
            self._record(Recorded(request.method, request.path, who, key, payload, status, body, self.clock.now()))
            return web.json_response(body, status=status)

        return wrapped

    def _record(self, record: Recorded) -> None:
        self.records.append(record)
        for listener in self.listeners:
            listener(record)

    async def _json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    def _conversation_closed(self, conv: Conversation) -> bool:
        awaiting = conv.awaiting_since
        if conv.closed_reason is None and awaiting is not None and self.clock.now() >= awaiting + conv.window_seconds:
            conv.closed_reason = "reply_timeout"
        return conv.closed_reason is not None

    async def _send_message(self, request: web.Request, who: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
        body = await self._json(request)
        if body is None:
            return (*_err(400, "body must be a JSON object"), {})
        conv = self.conversations.get(request.match_info["cid"])
        if conv is None or who != f"store:{conv.store_id}":
            return (*_err(404, "no such conversation for this store"), body)
        store = self.config.store(conv.store_id)
        assert store is not None
        agent = next((a for a in store.agents if a.id == body.get("agent_id")), None)
        if agent is None or not agent.im_permission:
            return (*_err(403, f"agent {body.get('agent_id')!r} lacks IM permission"), body)
        if self._conversation_closed(conv):
            return (*_err(409, f"conversation closed ({conv.closed_reason})"), body)
        content = body.get("content")
        if not isinstance(content, dict) or content.get("type") not in {"text", "image"}:
            return (*_err(400, "content must be {type: text, text} or {type: image, media_id}"), body)
        if content["type"] == "text" and not str(content.get("text", "")).strip():
            return (*_err(400, "text is empty"), body)
        if content["type"] == "image" and self.media.get(str(content.get("media_id")), {}).get("kind") != "image":
            return (*_err(400, "media_id is not an uploaded image"), body)
        message_id = self.next_id("m")
        conv.messages.append({"from": "merchant", "agent_id": agent.id, "content": content, "message_id": message_id})
        conv.awaiting_since = None
        return 200, {"message_id": message_id}, body

    async def _upload_media(self, request: web.Request, who: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
        try:
            reader = await request.multipart()
            part = await reader.next()
        except (ValueError, AssertionError, KeyError):
            return (*_err(400, "multipart body with a 'file' field expected"), {})
        while part is not None and getattr(part, "name", None) != "file":
            part = await reader.next()
        if part is None or not isinstance(part, aiohttp.BodyPartReader):
            return (*_err(400, "multipart body with a 'file' field expected"), {})
        head = b""
        size = 0
        limit: int | None = None
        while chunk := await part.read_chunk(256 * 1024):
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
                media_type = sniff_media(head) if len(head) >= SNIFF_BYTES else None
                if len(head) >= SNIFF_BYTES and media_type is None:
                    return (*_err(415, "file type not allowed (images JPG/PNG, videos MP4/MOV/FLV/AVI/MKV/WEBM)"), {})
                if media_type is not None:
                    limit = media_type.max_bytes
            size += len(chunk)
            if limit is not None and size > limit:
                return (*_err(413, f"file is larger than {limit} bytes"), {"filename": part.filename, "size": size})
        refusal = media_refusal(head, size)
        if refusal is not None:
            status = 415 if refusal.reason == "type" else 413
            return (*_err(status, f"file refused: {refusal.reason}"), {"filename": part.filename, "size": size})
        media_type = sniff_media(head)
        assert media_type is not None
        media_id = self.next_id("media")
        self.media[media_id] = {"kind": media_type.kind, "format": media_type.format, "size": size, "owner": who}
        return (
            200,
            {"media_id": media_id, "kind": media_type.kind, "size": size},
            {"filename": part.filename, "size": size},
        )

    def _task_for(self, tid: str, who: str) -> TaskOrder | None:
        task = self.task_orders.get(tid)
        if task is None or who not in {f"store:{task.store_id}", f"creator:{task.creator_id}"}:
            return None
        return task

    def _expire_task(self, task: TaskOrder) -> None:
        deadline = task.data.get("deadline_at")
        if task.status == "pending" and deadline and self.clock.now() >= datetime.fromisoformat(deadline).timestamp():
            task.status = "timed_out"
            task.log.append(
                {
                    "at": iso(self.clock.now()),
                    "type": "timed_out",
                    "operator": {"side": "platform", "id": "", "name": ""},
                }
            )

    async def _add_comment(self, request: web.Request, who: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
        body = await self._json(request)
        if body is None:
            return (*_err(400, "body must be a JSON object"), {})
        task = self._task_for(request.match_info["tid"], who)
        if task is None:
            return (*_err(404, "no such task order for this caller"), body)
        side = body.get("side")
        if side not in {"merchant", "creator"} or who.split(":")[0] != ("store" if side == "merchant" else "creator"):
            return (*_err(400, "side must be the caller's own: merchant (store) or creator"), body)
        if not str(body.get("text", "")).strip():
            return (*_err(400, "comment text is empty"), body)
        self._expire_task(task)
        if task.status != "pending":
            return (*_err(409, f"task order is {task.status}"), body)
        count = sum(1 for c in task.comments if c["side"] == side)
        if count >= COMMENTS_PER_SIDE:
            return (*_err(422, f"comment limit reached ({count}/{COMMENTS_PER_SIDE})"), body)
        comment = {
            "comment_id": self.next_id("cm"),
            "side": side,
            "author_id": str(body.get("author_id", "")),
            "text": body["text"],
            "created_at": iso(self.clock.now()),
        }
        task.comments.append(comment)
        task.log.append(
            {
                "at": comment["created_at"],
                "type": f"comment_{side}",
                "operator": {"side": side, "id": comment["author_id"], "name": ""},
            }
        )
        return 200, {"comment_id": comment["comment_id"]}, body

    async def _process(self, request: web.Request, who: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
        body = await self._json(request)
        if body is None:
            return (*_err(400, "body must be a JSON object"), {})
        task = self._task_for(request.match_info["tid"], who)
        if task is None or not who.startswith("store:"):
            return (*_err(404, "no such task order for this store"), body)
        if body.get("result") not in {"resolved", "unresolvable"}:
            return (*_err(400, "result must be resolved or unresolvable"), body)
        if not str(body.get("solution", "")).strip():
            return (*_err(400, "solution is empty"), body)
        evidence = body.get("evidence", [])
        if not isinstance(evidence, list) or len(evidence) > MAX_EVIDENCE_FILES:
            return (*_err(400, f"at most {MAX_EVIDENCE_FILES} evidence files"), body)
        if any(str(m) not in self.media for m in evidence):
            return (*_err(400, "evidence must be uploaded media ids"), body)
        self._expire_task(task)
        if task.status != "pending":
            return (*_err(409, f"task order is already {task.status}"), body)
        task.status = body["result"]
        task.solution = {"result": body["result"], "solution": body["solution"], "evidence": evidence}
        task.log.append(
            {
                "at": iso(self.clock.now()),
                "type": body["result"],
                "operator": {"side": "merchant", "id": str(body.get("operator_id", "")), "name": ""},
            }
        )
        return 200, {}, body

    async def _get_task_order(self, request: web.Request, who: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
        task = self._task_for(request.match_info["tid"], who)
        if task is None:
            return (*_err(404, "no such task order for this caller"), {})
        self._expire_task(task)
        return 200, {**task.data, "status": task.status, "comments": task.comments, "log": task.log}, {}

    # -- driving the scenario: what platform CS and creators do ------------------------------------

    async def open_chat(self, store_id: str, content: dict[str, Any] | None = None, *, agent: str = "小飞") -> str:
        """Platform CS opens a chat with a store; returns the conversation id."""
        store = self.config.store(store_id)
        if store is None:
            raise KeyError(f"unknown store {store_id}")
        cid = self.next_id("conv-")
        window = store.reply_window.seconds + self.window_grace_seconds
        self.conversations[cid] = Conversation(store_id, cid, window)
        await self.chat_message(
            cid, content or {"type": "text", "text": "您好，请问这个订单什么时候发货？"}, agent=agent
        )
        return cid

    async def chat_message(
        self, cid: str, content: dict[str, Any], *, awaiting_reply: bool = True, agent: str = "小飞"
    ) -> Delivery:
        conv = self.conversations[cid]
        now = self.clock.now()
        if awaiting_reply and conv.awaiting_since is None:
            conv.awaiting_since = now
        message_id = self.next_id("pm")
        conv.messages.append({"from": "platform", "content": content, "message_id": message_id})
        data = {
            "shop_id": conv.store_id,
            "conversation_id": cid,
            "message_id": message_id,
            "sent_at": iso(now),
            "sender": {"agent_id": "cs-001", "name": agent},
            "content": content,
            "awaiting_reply": awaiting_reply,
        }
        return await self.push("store", conv.store_id, [("im_platform_message", data)])

    async def close_chat(self, cid: str, reason: str = "platform_closed") -> Delivery:
        conv = self.conversations[cid]
        conv.closed_reason = conv.closed_reason or reason
        data: dict[str, Any] = {
            "shop_id": conv.store_id,
            "conversation_id": cid,
            "closed_at": iso(self.clock.now()),
            "reason": reason,
        }
        if reason in {"reply_timeout", "service_ticket_created"}:
            data["service_ticket_id"] = self.next_id("st-")
        return await self.push("store", conv.store_id, [("im_platform_closed", data)])

    async def expire_windows(self) -> list[str]:
        """Closes, as the platform does, every chat whose reply window has run out; pushes the close."""
        expired = []
        for conv in self.conversations.values():
            was_open = conv.closed_reason is None
            if was_open and self._conversation_closed(conv):
                expired.append(conv.conversation_id)
                await self.close_chat(conv.conversation_id, "reply_timeout")
        return expired

    async def create_task_order(self, store_id: str, creator_id: str, **fields: Any) -> str:
        """A creator raises a task order; pushed to the store and to the creator's own endpoint."""
        creator = self.config.creator(creator_id)
        tid = self.next_id("T")
        data: dict[str, Any] = {
            "shop_id": store_id,
            "task_id": tid,
            "created_at": iso(self.clock.now()),
            "issue_type": "物流问题 Logistics",
            "creator": {"id": creator_id, "name": creator.name if creator else creator_id},
            "order_id": self.next_id("690"),
            "product": {"id": "p-1", "name": "保温杯 Thermos cup 500ml"},
            "creator_suggestion": "请商家尽快补发 Please resend",
            "consumer_description": "买家说快递一周没动 The parcel has not moved for a week",
            "explanation_message": "已联系商家处理，请耐心等待",
            "share_url": f"https://fxg.example/task/{tid}",
            "buyer_chat_url": f"https://im.example/buyer/{tid}",
        }
        data.update(fields)
        self.task_orders[tid] = TaskOrder(store_id, creator_id, data)
        self.task_orders[tid].log.append(
            {"at": data["created_at"], "type": "created", "operator": {"side": "creator", "id": creator_id, "name": ""}}
        )
        await self.push("store", store_id, [("task_order_created", data)])
        if creator is not None:
            await self.push("creator", creator_id, [("task_order_created", data)])
        return tid

    async def comment_on_platform(self, task_id: str, side: str, author_id: str, author_name: str, text: str) -> str:
        """Someone comments in the platform's own UI (not through the bridge): kept with the task
        order under the platform's own limit, and pushed to the store and to the creator."""
        task = self.task_orders[task_id]
        if sum(1 for c in task.comments if c["side"] == side) >= COMMENTS_PER_SIDE:
            raise ValueError(f"the platform refuses an {COMMENTS_PER_SIDE + 1}th {side} comment")
        comment = {"comment_id": self.next_id("cm"), "side": side, "author_id": author_id, "text": text,
                   "created_at": iso(self.clock.now())}  # fmt: skip
        task.comments.append(comment)
        task.log.append({"at": comment["created_at"], "type": f"comment_{side}",
                         "operator": {"side": side, "id": author_id, "name": author_name}})  # fmt: skip
        data = {"shop_id": task.store_id, "task_id": task_id, "comment_id": comment["comment_id"],
                "author": {"side": side, "id": author_id, "name": author_name}, "text": text,
                "created_at": comment["created_at"]}  # fmt: skip
        await self.push("store", task.store_id, [("task_order_comment", data)])
        if self.config.creator(task.creator_id) is not None:
            await self.push("creator", task.creator_id, [("task_order_comment", data)])
        return str(comment["comment_id"])

    async def process_on_platform(
        self, task_id: str, result: str, solution: str, operator: tuple[str, str] = ("main-1001", "店长 Li"),
        evidence: list[dict[str, Any]] | None = None,
    ) -> Delivery:  # fmt: skip
        """The merchant processes a task order in the platform's own UI (not through the bridge):
        the result is pushed to the store as ``task_order_processed``. ``operator`` is (id, name);
        ``evidence`` the files as the push lists them ({url, kind, size})."""
        task = self.task_orders[task_id]
        data = {"shop_id": task.store_id, "task_id": task_id, "result": result, "solution": solution,
                "evidence": evidence or [], "operator": {"id": operator[0], "name": operator[1]},
                "processed_at": iso(self.clock.now())}  # fmt: skip
        return await self.push("store", task.store_id, [("task_order_processed", data)])

    # -- pushing ----------------------------------------------------------------------------------

    def _credentials(self, kind: str, endpoint_id: str) -> PlatformCredentials:
        owner = self.config.store(endpoint_id) if kind == "store" else self.config.creator(endpoint_id)
        if owner is None:
            raise KeyError(f"unknown {kind} {endpoint_id}")
        return owner.platform

    def envelope(self, records: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        return [
            {"tag": tag, "msg_id": self.next_id("7301"), "data": json.dumps(data, ensure_ascii=False)}
            for tag, data in records
        ]

    async def push(self, kind: str, endpoint_id: str, records: list[tuple[str, dict[str, Any]]]) -> Delivery:
        return await self.push_envelope(kind, endpoint_id, self.envelope(records))

    async def push_envelope(self, kind: str, endpoint_id: str, envelope: list[dict[str, Any]]) -> Delivery:
        """Signs and sends; redelivers with backoff until the bridge answers success, like the platform."""
        creds = self._credentials(kind, endpoint_id)
        body = json.dumps(envelope, ensure_ascii=False).encode()
        headers = {
            "app-id": creds.app_key,
            "event-sign": sign(creds.app_key, body, creds.app_secrets[0]),
            "Content-Type": "application/json",
        }
        path = f"/webhooks/{'platform' if kind == 'store' else 'creator'}/{endpoint_id}"
        delivery = Delivery(f"{kind}:{endpoint_id}", envelope)
        self.deliveries.append(delivery)
        for attempt in range(self.push_max_attempts):
            try:
                status, raw = await self.send_push(self.bridge_url + path, body, headers)
                answer = json.loads(raw) if raw.strip() else None
                delivery.statuses.append(status)
                if status == 200 and isinstance(answer, dict) and answer.get("code") == 0:
                    delivery.delivered = True
                    return delivery
            except (aiohttp.ClientError, OSError, json.JSONDecodeError) as exc:
                delivery.statuses.append(0)
                log.info("sandbox push to %s failed (%s); redelivering", path, exc)
            await asyncio.sleep(min(2.0, self.push_retry_seconds * 2**attempt))
        return delivery

    async def _send_push_with_aiohttp(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        async with self.http().post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.read()
