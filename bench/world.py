"""The world `make bench-chats` drives the bridge from, in two processes of its own, neither of them the
benchmark's: the Slack emulator's and the platform sandbox's. Each carries its side of the load, where
that traffic comes from in life:
- the platform's process pushes platform CS's messages, each at its scheduled moment, and notes when
  each reply reaches the platform;
- Slack's process answers each chat in its thread, as the channel's agent, the moment its post lands.

Each moment is taken in the process where it happens (one machine, one clock). Each process also
measures its own delay — how late it pushed, how long its event loop stalled — so a world that could
not keep up marks the latencies it timed invalid, and its CPU is counted apart from the bridge's.
The benchmark only coordinates, over a pipe to each process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import multiprocessing
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11

from bridge.config import load_config
from bridge.sandbox.platform import PlatformSandbox, Recorded
from bridge.sandbox.slack import Message, SlackEmulator

CHAT_TIMEOUT_SECONDS = 300.0
"""A chat whose post or reply has not arrived this long after its push is counted missing."""


class Side(Protocol):
    async def start(self) -> str: ...
    async def stop(self) -> None: ...


class WorldProcess:
    """One side of the world in a child process (spawned: a fresh interpreter, nothing inherited),
    driven over a pipe: each call sends a command and waits for its answer."""

    def __init__(self, name: str, side: type[Side], *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, side, args), name=name, daemon=True)
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    async def started(self) -> str:
        """The URL the side's server listens on, once it does."""
        return str(await asyncio.to_thread(self._answer))

    async def call(self, command: str, **params: Any) -> Any:
        self.conn.send((command, params))
        return await asyncio.to_thread(self._answer)

    def _answer(self) -> Any:
        try:
            answer = self.conn.recv()
        except EOFError:
            self.process.join(5)
            raise WorldFailed(f"the {self.name} process ended (exit code {self.process.exitcode})") from None
        if isinstance(answer, WorldFailed):
            raise answer
        return answer

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop", {}))
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


class WorldFailed(RuntimeError):
    """What a command raised in a world process, carried back to the benchmark."""


def _serve(conn: Connection, side_type: type[Side], args: tuple[Any, ...]) -> None:
    async def serve() -> None:
        side = side_type(*args)
        conn.send(await side.start())
        while True:
            command, params = await asyncio.to_thread(conn.recv)
            if command == "stop":
                await side.stop()
                return
            try:
                answer = await getattr(side, command)(**params)
            except Exception as exc:  # carried back: the benchmark fails with it
                answer = WorldFailed(f"{side_type.__name__}.{command}: {exc!r}")
            conn.send(answer)

    asyncio.run(serve())


class SlackSide:
    """The Slack emulator and the agents who answer in it."""

    def __init__(self, signing_secret: str, bot_token: str, bridge_url: str) -> None:
        self.slack = SlackEmulator(signing_secret, bot_token, bridge_url=bridge_url)
        self.answering: asyncio.Task[dict[str, Any]] | None = None

    async def start(self) -> str:
        await self.slack.start()
        return self.slack.api_url

    async def stop(self) -> None:
        await self.slack.stop()

    async def arm(self, label: str, chats: int) -> None:
        """From now on, answer each post carrying a ``[label-…]`` marker (``chats`` of them)."""
        ready = asyncio.Event()
        self.answering = asyncio.create_task(self._answer_posts(label, chats, ready))
        await ready.wait()

    async def collect(self) -> dict[str, Any]:
        """When each armed post was answered, or once they have had their time: for each marker, when
        its post landed and when its answer was sent; the 429s; this process's loop stalls."""
        assert self.answering is not None
        answered, self.answering = await self.answering, None
        return answered

    async def _answer_posts(self, label: str, chats: int, ready: asyncio.Event) -> dict[str, Any]:
        landed: dict[str, list[float]] = {}
        answered = 0
        replies: set[asyncio.Task[None]] = set()
        all_answered = asyncio.Event()
        prefix = f"[{label}-"
        rate_limited_before = self.slack.rate_limited

        async def answer(marker: str, message: Message) -> None:
            nonlocal answered
            channel_index = int(marker[1:-1].split("-")[-2])
            landed[marker].append(time.time())
            await self.slack.user_message(f"UB{channel_index:03d}", message.channel, f"回复 {marker}",
                                          thread_ts=message.thread_ts or message.ts)  # fmt: skip
            answered += 1
            if answered == chats:
                all_answered.set()

        def on_post(message: Message) -> None:
            start = message.text.rfind(prefix)
            if start < 0:
                return
            marker = message.text[start : message.text.find("]", start) + 1]
            if marker in landed:
                return  # the thread's later posts carry it too
            landed[marker] = [message.posted_at]
            replies.add(task := asyncio.create_task(answer(marker, message)))
            task.add_done_callback(replies.discard)

        self.slack.listeners.append(on_post)
        try:
            with no_collector_pauses():
                async with watching_loop_lag() as lag:
                    ready.set()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(all_answered.wait(), CHAT_TIMEOUT_SECONDS)
        finally:
            self.slack.listeners.remove(on_post)
        return {"landed": {marker: times for marker, times in landed.items() if len(times) == 2},
                "slack_429s": self.slack.rate_limited - rate_limited_before, "loop_lag": lag}  # fmt: skip


class PushConnections:
    """Keep-alive connections to the bridge on which each push is prepared ahead and written at its moment.

    aiohttp's client on Python 3.11 writes a request's body from a task of its own, which runs only
    after every task already waiting: of 200 pushes due at once, the first left the process 33 ms
    after its moment (strace), once all 200 had been prepared, and the bridge was timed from a moment
    its push had not yet been sent. Here a push is built, signed and framed (h11) before its moment
    (``PREPARE_AHEAD_SECONDS``); at the moment the pushes due then are written one after another in
    the order they were sent (``at``), and the moment each was written is recorded (``Scheduled``)."""

    def __init__(self, bridge_url: str) -> None:
        parts = urlsplit(bridge_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]] = []
        self._gates: dict[float, asyncio.Future[None]] = {}

    async def open(self, count: int) -> int:
        """Opens connections until ``count`` are idle; returns how many are."""
        missing = max(0, count - len(self.idle))
        self.idle.extend(await asyncio.gather(*(self._connect() for _ in range(missing))))
        return len(self.idle)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, h11.Connection(h11.CLIENT)

    async def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """The sandbox's ``send_push``: one request on an idle connection (a new one if none is),
        written at the sending task's ``Scheduled`` moment (at once when it has passed)."""
        reader, writer, http = self.idle.pop() if self.idle else await self._connect()
        head = [("Host", self.host), ("Content-Length", str(len(body))), *headers.items()]
        request = h11.Request(method="POST", target=urlsplit(url).path, headers=head)
        frames = b"".join(http.send(event) or b"" for event in (request, h11.Data(data=body), h11.EndOfMessage()))
        scheduled = SCHEDULED.get(None)
        if scheduled is not None:
            await self.at(scheduled.due)
        writer.write(frames)
        if scheduled is not None and scheduled.written_at is None:
            scheduled.written_at = time.time()
        try:
            status, answer = await _read_response(reader, http)
        except BaseException:
            writer.close()
            raise
        http.start_next_cycle()
        self.idle.append((reader, writer, http))
        return status, answer

    async def at(self, moment: float) -> None:
        """Returns at ``moment`` (at once if it has passed). The tasks waiting for one moment resume
        in the order they began to wait (one future per moment, whose callbacks run in order), which
        sleeps due at the same moment do not promise: a burst's pushes are prepared and written in
        the order they were sent, every store's first chat first."""
        if moment <= time.time():
            return
        gate = self._gates.get(moment)
        if gate is None:
            loop = asyncio.get_running_loop()
            gate = self._gates[moment] = loop.create_future()
            loop.call_at(loop.time() + moment - time.time(), self._open_gate, moment)
        await gate

    def _open_gate(self, due: float) -> None:
        self._gates.pop(due).set_result(None)


PREPARE_AHEAD_SECONDS = 0.08
"""How long before its moment a push is prepared: long enough for a burst of 200 (about 40 ms on
this machine), well short of the lead the benchmark gives the platform's process (bench/chats.py: PUSH_LEAD_SECONDS)."""


@dataclass
class Scheduled:
    """A push's moment, and when PushConnections wrote it (the first time, if it was redelivered)."""

    due: float
    written_at: float | None = None


SCHEDULED: contextvars.ContextVar[Scheduled] = contextvars.ContextVar("SCHEDULED")
"""Set by the task that opens a chat, read by PushConnections.post, which the sandbox calls for it."""


async def _read_response(reader: asyncio.StreamReader, http: h11.Connection) -> tuple[int, bytes]:
    status, chunks = 0, []
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as exc:
            raise ConnectionResetError(f"the bridge's answer could not be read: {exc}") from exc
        if event is h11.NEED_DATA:
            http.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return status, b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionResetError("the bridge closed the connection before answering")


class PlatformSide:
    """The platform sandbox and platform CS, who open the chats; the pushes go through PushConnections."""

    def __init__(self, config_path: Path, environ: dict[str, str], bridge_url: str) -> None:
        self.sandbox = PlatformSandbox(load_config(config_path, environ=environ).config, bridge_url)
        self.connections = PushConnections(bridge_url)
        self.sandbox.send_push = self.connections.post

    async def start(self) -> str:
        return await self.sandbox.start()

    async def stop(self) -> None:
        await self.connections.close()
        await self.sandbox.stop()

    async def open_connections(self, count: int) -> int:
        """Opens ``count`` keep-alive connections to the bridge, and returns how many are open and idle.
        Before a burst: a platform that pushes all day holds its connections open, and a burst
        from a process still connecting measured that process (its pushes went out 40 ms late
        at p50 on the first burst of a fresh stack, 9 ms on later ones), not the bridge."""
        return await self.connections.open(count)

    async def push(self, label: str, channels: int, per_channel: int, spacing: float, started: float) -> dict[str, Any]:
        """Opens ``per_channel`` chats in each of ``channels`` stores, a new one in each every ``spacing``
        seconds from ``started`` (0: all at once), in turn across the stores; waits for each reply.
        For each marker: its store's index, its number, its push's moment, how late the push was
        written after it, when the bridge acknowledged the push, and when the chat's reply reached
        the platform (None: it did not)."""
        loop = asyncio.get_running_loop()
        replies: dict[str, asyncio.Future[float]] = {}
        chats: dict[str, tuple[int, int, float, float, float, float | None]] = {}
        push_late: list[float] = []

        def on_platform(record: Recorded) -> None:
            cid = record.path.split("/")[3] if record.path.startswith("/im/conversations/") else ""
            waiting = replies.setdefault(cid, loop.create_future()) if cid else None
            if waiting is not None and record.status == 200 and not waiting.done():
                waiting.set_result(record.at)

        async def one_chat(channel_index: int, n: int) -> None:
            # Open loop: each push has its moment, and its latency counts from that moment, so a
            # world that falls behind shows up as latency (and as lateness, recorded).
            due = started + n * spacing + channel_index * (spacing / channels)
            await self.connections.at(due - PREPARE_AHEAD_SECONDS)
            marker = f"[{label}-{channel_index}-{n}]"
            SCHEDULED.set(scheduled := Scheduled(due))
            cid = await self.sandbox.open_chat(f"{2001 + channel_index}", {"type": "text", "text": f"您好 {marker}"})
            acknowledged = time.time()
            late = (scheduled.written_at or acknowledged) - due
            push_late.append(late)
            reply = replies.setdefault(cid, loop.create_future())
            try:
                replied: float | None = await asyncio.wait_for(reply, CHAT_TIMEOUT_SECONDS)
            except TimeoutError:
                replied = None
            chats[marker] = (channel_index, n, due, late, acknowledged, replied)

        self.sandbox.listeners.append(on_platform)
        try:
            with no_collector_pauses():
                async with watching_loop_lag() as lag:
                    # In turn across the stores (every store's first chat, then every one's second…),
                    # as chats from many stores' customers arrive, not one store's ten before the next's first.
                    await asyncio.gather(*(one_chat(c, n) for n in range(per_channel) for c in range(channels)))
        finally:
            self.sandbox.listeners.remove(on_platform)
        return {"chats": chats, "push_late": push_late, "loop_lag": lag}


LOOP_TICK_SECONDS = 0.005


@contextlib.asynccontextmanager
async def watching_loop_lag() -> AsyncIterator[list[float]]:
    """How late this process's event loop wakes a task that sleeps a few milliseconds at a time, while
    the load runs: the world's own delay."""
    delays: list[float] = []

    async def tick() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LOOP_TICK_SECONDS)
            delays.append(time.perf_counter() - before - LOOP_TICK_SECONDS)

    task = asyncio.create_task(tick())
    try:
        yield delays
    finally:
        task.cancel()


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """A world process is part of the measuring instrument: its garbage collector is kept from
    running during a load, whose objects it only keeps growing, because a full collection of its
    heap stalled it 60–300 ms and every chat timed across that stall looked as late. The bridge's
    processes keep their collectors: their pauses are the bridge's own."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
