"""The platform's outbound API (PLATFORM-API §2), with errors sorted into retry-later and final.

Every call carries ``Authorization: Bearer <token>`` and an ``Idempotency-Key``: the platform
answers a repeated key with the first result, so the outbox may retry freely.
"""

from __future__ import annotations

import io
import json
from typing import Any, cast

import aiohttp

from bridge.engine.outbox import FinalFailure, RetryLater


class PlatformClient:
    def __init__(
        self, base_url: str, token: str, session: aiohttp.ClientSession, timeout_seconds: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    def _headers(self, idempotency_key: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    async def _call(
        self, method: str, path: str, *, idempotency_key: str | None, json_body: Any = None, data: Any = None
    ) -> dict[str, Any]:
        url = self.base_url + path
        try:
            async with self.session.request(
                method, url, json=json_body, data=data, headers=self._headers(idempotency_key), timeout=self.timeout
            ) as resp:
                text = await resp.text()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(f"platform {method} {path}: {type(exc).__name__} {exc}".strip()) from None
        try:
            body: object = json.loads(text) if text else {}
        except json.JSONDecodeError:
            body = {"msg": text[:200]}
        if not isinstance(body, dict):
            body = {"result": body}
        if 200 <= status < 300:
            return cast(dict[str, Any], body)
        msg = str(body.get("msg") or f"HTTP {status}")
        if status == 429:
            after = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
            raise RetryLater(f"platform rate limit: {msg}", after=after)
        if status >= 500:
            raise RetryLater(f"platform {status}: {msg}")
        raise FinalFailure(msg, status=status, code=str(body.get("code", status)))

    async def send_message(
        self, conversation_id: str, agent_id: str, content: dict[str, Any], idempotency_key: str
    ) -> str:
        body = await self._call(
            "POST",
            f"/im/conversations/{conversation_id}/messages",
            idempotency_key=idempotency_key,
            json_body={"agent_id": agent_id, "content": content},
        )
        return str(body.get("message_id", ""))

    async def upload_media(self, data: bytes, filename: str, content_type: str, idempotency_key: str) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(data), filename=filename, content_type=content_type)
        return await self._call("POST", "/media", idempotency_key=idempotency_key, data=form)

    async def add_comment(self, task_id: str, side: str, author_id: str, text: str, idempotency_key: str) -> str:
        body = await self._call(
            "POST",
            f"/task-orders/{task_id}/comments",
            idempotency_key=idempotency_key,
            json_body={"side": side, "author_id": author_id, "text": text},
        )
        return str(body.get("comment_id", ""))

    async def process_task_order(
        self, task_id: str, result: str, solution: str, evidence: list[str], operator_id: str, idempotency_key: str
    ) -> None:
        await self._call(
            "POST",
            f"/task-orders/{task_id}/process",
            idempotency_key=idempotency_key,
            json_body={"result": result, "solution": solution, "evidence": evidence, "operator_id": operator_id},
        )

    async def get_task_order(self, task_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/task-orders/{task_id}", idempotency_key=None)
