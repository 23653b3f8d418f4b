"""`bridge` command line: serve, check, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar
from zoneinfo import ZoneInfo

import uvloop
from redis.asyncio import Redis

from bridge.config import BridgeConfig, ConfigError, ConfigHolder, LoadedConfig, Problem, Store, load_config
from bridge.engine.held import unwritable

if TYPE_CHECKING:
    from bridge.archive.store import Archive
    from bridge.engine.deadlist import DeadList

T = TypeVar("T")


def log_handler(log_format: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Text for people at a terminal; ``json`` for a log pipeline: one object per line with time,
    level, logger, message and what the line is about (store, creator, chat, task_order, event_id,
    job_id, timer), so one chat can be followed through every process."""
    from bridge.engine.logcontext import ContextFilter

    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    return handler


def _setup_logging(verbose: bool, log_format: str = "text") -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if root.handlers:
        return  # logging is set up already (an embedding program, a test runner): leave it as it is
    root.addHandler(log_handler(log_format))
    # httpx (python-telegram-bot's client) logs every request's URL, which carries the bot token;
    # Alembic narrates every migration plugin at start.
    for chatty in ("httpx", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def check(path: Path, online: bool = False) -> int:
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}")
        errors = sum(p.severity == "error" for p in exc.problems)
        print(f"{exc.source}: {errors} error(s), {len(exc.problems) - errors} warning(s) — not valid")
        return 1
    print(summary(loaded))
    held = Path(loaded.config.server.held_dir)
    if (why := unwritable(held)) is not None:
        print(f"{loaded.source}: warning: server.held_dir: {why}: a Slack event that comes for the last time while "
              "Redis is down could not be held and would be lost")  # fmt: skip
    if not online:
        return 0
    problems = asyncio.run(probe_destinations(loaded))
    for problem in problems:
        print(f"{loaded.source}: online: {problem}")
    errors = sum(p.severity == "error" for p in problems)
    print(f"{loaded.source}: online check — {errors} error(s), {len(problems) - errors} warning(s)")
    return 1 if errors else 0


async def probe_destinations(loaded: LoadedConfig) -> list[Problem]:
    """Asks each configured destination whether its credentials and targets work."""
    from bridge.destinations import plugins

    problems: list[Problem] = []
    for service, plugin in plugins().items():
        settings = loaded.config.settings_of(service)
        if settings is not None and plugin.probe is not None:
            problems += await plugin.probe(settings, loaded.config)
    ids = {"stores": [s.id for s in loaded.config.stores], "creators": [c.id for c in loaded.config.creators]}
    return [p.located(ids) for p in problems]


def summary(loaded: LoadedConfig) -> str:
    config = loaded.config
    lines = [f"{loaded.source}: {problem}" for problem in loaded.warnings]
    lines.append(loaded.headline())
    if loaded.demo_values:
        names = sorted({p.message.split(" ", 1)[0] for p in loaded.demo_values})
        lines.append(f"  demo values: {len(names)} variable(s) not set, so `bridge serve` refuses to start without "
                     f"--demo: {', '.join(names)}")  # fmt: skip
    for store in config.stores:
        lines.append(
            f"  store {store.id} ({store.name}): push {store.webhook_path}; chats → "
            f"{store.destinations.platform_chats}, task orders → {store.destinations.task_orders}; "
            f"designated {', '.join(a.id for a in store.designated)}; reply window {store.reply_window.seconds} s; "
            f"{store.timezone}, {store.locale}"
        )
    for creator in config.creators:
        lines.append(
            f"  creator {creator.id} ({creator.name}): push {creator.webhook_path}; pings → {creator.destination}"
        )
    return "\n".join(lines)


def _load_holder(path: Path) -> ConfigHolder | None:
    try:
        return ConfigHolder(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def serve(path: Path, host: str | None, port: int | None, role: str = "all", demo: bool = False) -> int:
    from bridge.app.redis_server import RedisServerError
    from bridge.app.service import Bridge, StartupError, connect_redis, serve_until_signalled

    holder = _load_holder(path)
    if holder is None:
        return 1
    for warning in holder.warnings:
        logging.getLogger("bridge.config").warning("%s: %s", path, warning)
    if holder.demo_values and not demo:
        for problem in holder.demo_values:
            print(f"{path}: {problem.path}: {problem.message}", file=sys.stderr)
        names = sorted({p.message.split(" ", 1)[0] for p in holder.demo_values})
        print(f"bridge: refusing to serve on demo values: set {', '.join(names)} (.env.example lists every "
              "variable), or pass --demo to run against the local emulators", file=sys.stderr)  # fmt: skip
        return 1
    try:
        redis, embedded = connect_redis()
    except RedisServerError as error:
        print(f"bridge: {error}", file=sys.stderr)
        return 1
    bridge = Bridge(holder, redis, embedded_redis=embedded)
    try:
        uvloop.run(serve_until_signalled(bridge, host, port, role))
    except StartupError as error:
        print(f"bridge: {error}", file=sys.stderr)
        return 1
    return 0


def archive_command(action: str) -> int:
    """``bridge archive migrate``: brings the archive's schema to the newest version."""
    from bridge.archive.store import archive_url, migrate, shown_url

    url = archive_url()
    if action == "migrate":
        migrate(url)
        print(f"archive at {shown_url(url)}: schema up to date")
    return 0


def telegram_command(path: Path, action: str, bridge_url: str | None) -> int:
    """``bridge telegram set-webhook|set-commands|poll``: what an operator does once for the bot, or
    long polling where the bridge has no public URL."""
    import signal

    from telegram import Bot
    from telegram.error import TelegramError

    from connectors.telegram.settings import TelegramSettings
    from connectors.telegram.setup import WEBHOOK_PATH, poll, set_commands, set_webhook

    try:
        config = load_config(path).config
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    settings: TelegramSettings | None = getattr(config, "telegram", None)  # a destination's own section
    if settings is None:
        print(f"{path}: no telegram: section", file=sys.stderr)
        return 1
    bot = Bot(settings.bot_token, base_url=settings.api_base_url, base_file_url=settings.file_base_url)

    async def run() -> str:
        async with bot:
            if action == "set-webhook":
                if not config.server.public_url:
                    raise ValueError("server.public_url (BRIDGE_PUBLIC_URL) is not set: Telegram needs the address")
                url = await set_webhook(bot, config.server.public_url, settings.webhook_secret)
                return f"webhook set: {url} (secret token, updates: message, edited_message, callback_query)"
            if action == "set-commands":
                return f"command menu set: /tasks, /stats ({', '.join(await set_commands(bot))})"
            target = (bridge_url or f"http://127.0.0.1:{config.server.port}").rstrip("/") + WEBHOOK_PATH
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            logging.getLogger(__name__).info("long polling Telegram; updates go to %s", target)
            handed = await poll(bot, target, settings.webhook_secret, stop)
            return f"stopped after handing {handed} update(s) to {target}"

    try:
        print(asyncio.run(run()))
    except (TelegramError, ValueError, OSError) as error:
        print(f"bridge telegram {action}: {error}", file=sys.stderr)
        return 1
    return 0


def sandbox(path: Path, host: str, port: int, bridge_url: str | None) -> int:
    from bridge.sandbox.platform import PlatformSandbox

    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    target = bridge_url or loaded.config.server.public_url or "http://127.0.0.1:8080"

    async def run() -> None:
        platform = PlatformSandbox(loaded.config, target, push_retry_seconds=0.5)
        url = await platform.start(host, port)
        print(f"platform sandbox at {url}, pushing to {target}", flush=True)
        print(f'  open a chat:     curl -XPOST {url}/_sandbox/chats -d \'{{"store_id": "STORE"}}\'', flush=True)
        print(f"  see what it got: curl {url}/_sandbox/records", flush=True)
        try:
            await platform.run_expiry()
        finally:
            await platform.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _stores(path: Path, store_id: str | None) -> list[Store] | None:
    try:
        config = load_config(path).config
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
    stores = [s for s in config.stores if store_id in (None, s.id)]
    if not stores:
        print(f"{path}: no store {store_id}", file=sys.stderr)
        return None
    return stores


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: object) -> object:
    """A CSV cell no spreadsheet runs: text that starts like a formula (a consumer's
    "=HYPERLINK(…)", "+1…", "@SUM…") gets a leading apostrophe, so Excel and LibreOffice take it as
    text, as OWASP's advice on CSV injection has it. JSON lines keep every text untouched."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def _flat(record: dict[str, object]) -> dict[str, object]:
    """A record as spreadsheet columns: a small object (a task order's creator, its product) spread
    over a column per field (``creator_id``, ``creator_name``), so it can be sorted and filtered;
    lists (comments, the log) as JSON in one cell."""
    flat: dict[str, object] = {}
    for key, value in record.items():
        if isinstance(value, dict) and all(isinstance(v, str | int | float) for v in value.values()):
            flat |= {f"{key}_{field}": v for field, v in value.items()}
        else:
            flat[key] = value if isinstance(value, str | int | float) else json.dumps(value, ensure_ascii=False)
    return flat


def _day_bounds(store: Store, since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """Two days in the store's time zone, both included, as [start, end) moments."""
    from bridge.flows.statistics import day_start

    tz = ZoneInfo(store.timezone)
    return (day_start(since, tz) if since else None), (day_start(until + timedelta(days=1), tz) if until else None)


async def _on_archive(work: Callable[[Archive], Awaitable[T]]) -> T:
    """Runs ``work`` against the archive (ARCHIVE_URL, or the embedded SQLite file)."""
    from bridge.archive.store import Archive, archive_url, migrate

    url = archive_url()
    await asyncio.to_thread(migrate, url)
    archive = Archive(url)
    try:
        return await work(archive)
    finally:
        await archive.close()


def export(
    path: Path,
    what: str,
    status: str,
    fmt: str,
    out: Path | None,
    store_id: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> int:
    """B10 and A9, from the archive: every task order (created) or chat (opened) between two days
    in its store's time zone, both included, as JSON lines, CSV or an Excel sheet, with every field
    kept: for a task order the result, solution, who processed it and when, comments, evidence and the
    log; for a chat its times, assignee, who answered, replies, how it closed and its messages."""
    import csv
    import io

    from bridge.flows.exports import chat_export, task_export
    from bridge.flows.task_records import STATUSES

    stores = _stores(path, store_id)
    if stores is None:
        return 1
    allowed = ("all", *STATUSES) if what == "tasks" else ("all", "open", "closed")
    if status not in allowed:
        print(f"export {what} --status: one of {', '.join(allowed)}", file=sys.stderr)
        return 1
    if fmt == "xlsx" and out is None:
        print("an Excel sheet needs --out FILE.xlsx", file=sys.stderr)
        return 1

    async def rows(archive: Archive) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        for store in stores:
            start, end = _day_bounds(store, since, until)
            if what == "tasks":
                found += [{"store": store.id, **row} for row in await task_export(archive, store, status, start, end)]
            else:
                wanted = None if status == "all" else status
                found += [{"store": store.id, **row} for row in await chat_export(archive, store, wanted, start, end)]
        return found

    records = asyncio.run(_on_archive(rows))
    noun = "task order(s)" if what == "tasks" else "chat(s)"
    flat = [_flat(record) for record in records]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    if fmt == "xlsx":
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        book = Workbook(write_only=True)
        sheet = book.create_sheet("task orders" if what == "tasks" else "chats")

        def cell(value: object) -> object:
            if not isinstance(value, str):
                return value
            # What a consumer or an agent wrote stays text: a leading "=" would make it a formula
            # Excel runs, and a control character (a pasted vertical tab) makes openpyxl refuse the
            # whole sheet. Those characters become spaces.
            text = WriteOnlyCell(sheet, ILLEGAL_CHARACTERS_RE.sub(" ", value))
            text.data_type = "s"
            return text

        sheet.append(fields)
        for row in flat:
            sheet.append([cell(row.get(f, "")) for f in fields])
        assert out is not None
        book.save(out)
        print(f"{len(records)} {noun} written to {out}", file=sys.stderr)
        return 0
    buffer = io.StringIO()
    if fmt == "jsonl":
        for record in records:
            buffer.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    else:
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: _inert(v) for k, v in row.items()} for row in flat)
    if out is None:
        sys.stdout.write(buffer.getvalue())
    else:
        # A file is for opening in a spreadsheet: Excel reads UTF-8 without its byte-order mark as
        # the system's code page, which turns every Chinese character into noise.
        out.write_text(buffer.getvalue(), encoding="utf-8-sig" if fmt == "csv" else "utf-8")
        print(f"{len(records)} {noun} written to {out}", file=sys.stderr)
    return 0


def stats(
    path: Path, store_id: str | None, period: str | None, since: date | None, until: date | None, fmt: str
) -> int:
    """A9 from the archive, per store: a named period (as ``/feige stats`` shows it) or any days."""
    from bridge.flows.statistics import PERIODS, days_bounds, days_text, period_bounds, report, stats_text

    stores = _stores(path, store_id)
    if stores is None:
        return 1

    async def run(archive: Archive) -> list[str]:
        now = datetime.now(UTC)
        out = []
        for store in stores:
            tz = ZoneInfo(store.timezone)
            if since is None and until is None:
                if fmt == "text":
                    out.append(await stats_text(archive, store, period or "today", now))
                    continue
                start, end = period_bounds(period or "today", now, tz)
            else:  # one day left out: the last 30 days' first, or today (the store's)
                today = now.astimezone(tz).date()
                first, last = since or (until or today) - timedelta(days=PERIODS["30d"] - 1), until or today
                if fmt == "text":
                    out.append(await days_text(archive, store, first, last))
                    continue
                start, end = days_bounds(first, last, tz)
            found = await report(archive, store, start, end)
            out.append(json.dumps({"store": store.id, "since": start.isoformat(), "until": end.isoformat()}
                                  | found.as_dict(), ensure_ascii=False))  # fmt: skip
        return out

    for block in asyncio.run(_on_archive(run)):
        print(block)
    return 0


async def _on_redis(work: Callable[[Redis], Awaitable[T]]) -> T:
    """Runs ``work`` against the bridge's Redis (REDIS_URL, or the embedded server's data)."""
    from bridge.app.service import close_redis, connect_redis

    redis, embedded = connect_redis()
    try:
        return await work(redis)
    finally:
        await close_redis(redis)
        if embedded is not None:
            embedded.stop()


def _endpoint_tags(
    path: Path, store: str | None, creator: str | None, destinations: bool
) -> tuple[BridgeConfig, list[str]]:
    """The configuration, and the tags of the endpoints named (every one with neither): stores',
    creators' and, with ``destinations``, the destinations' own. Raises ValueError to print."""
    from bridge.destinations import plugins
    from bridge.engine import keys
    from bridge.engine.endpoint import Endpoint

    try:
        config = load_config(path).config
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    if store is not None and config.store(store) is None:
        raise ValueError(f"{path}: no store {store!r} is configured")
    if creator is not None and config.creator(creator) is None:
        raise ValueError(f"{path}: no creator {creator!r} is configured")
    if store is not None or creator is not None:
        tags = [keys.store_tag(store)] if store is not None else []
        return config, tags + ([keys.creator_tag(creator)] if creator is not None else [])
    tags = [keys.store_tag(s.id) for s in config.stores] + [keys.creator_tag(c.id) for c in config.creators]
    if destinations:
        return config, tags + [Endpoint("destination", service).tag for service in plugins()]
    return config, [*tags, keys.NO_ENDPOINT_TAG]


@dataclass(frozen=True)
class _DeadList:
    """What ``bridge dead-letters`` and ``bridge dead-events`` do to one endpoint's list."""

    entries: DeadList
    columns: Callable[[dict[str, Any]], list[str]]
    """An entry's columns in ``list``, after the endpoint's: id, kind, thread, when, why."""
    retry: Callable[[str, str | None], Awaitable[int]]


def _on_dead_list(
    what: str, path: Path, action: str, entry_id: str | None, store: str | None, creator: str | None,
    *, destinations: bool, open_list: Callable[[Redis, BridgeConfig], _DeadList],
) -> int:  # fmt: skip
    """Lists, shows (one id, whole, as JSON), replays or drops the entries (one id, or all) of the
    endpoints named (every one)."""
    try:
        config, tags = _endpoint_tags(path, store, creator, destinations)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1

    async def work(redis: Redis) -> int:
        dead, found = open_list(redis, config), 0
        for tag in tags:
            if action == "list":
                for entry in await dead.entries.read(tag):
                    print("\t".join([tag.strip("{}"), *dead.columns(entry)]))
                    found += 1
            elif action == "show":
                for _, entry in await dead.entries.matching(tag, entry_id):
                    print(json.dumps({"endpoint": tag.strip("{}")} | entry, ensure_ascii=False, indent=2))
                    found += 1
            else:
                found += await (dead.retry if action == "retry" else dead.entries.drop)(tag, entry_id)
        return found

    count = asyncio.run(_on_redis(work))
    if action == "list":
        print(f"{count} {what}(s)", file=sys.stderr)
        return 0
    if action == "show" and count:
        return 0
    if entry_id is not None and count == 0:
        named = store or creator
        print(f"no {what} {entry_id!r}" + (f" for {named}" if named else ""), file=sys.stderr)
        return 1
    print(f"{count} {what}(s) {'queued again' if action == 'retry' else 'dropped'}", file=sys.stderr)
    return 0


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def dead_letters(path: Path, action: str, letter_id: str | None, store: str | None, creator: str | None) -> int:
    """D5: lists, shows, replays or drops what the outbox could not deliver while it mattered."""
    from bridge.engine.outbox import Outbox
    from bridge.engine.timers import TimerStore

    def letters(redis: Redis, config: BridgeConfig) -> _DeadList:
        outbox = Outbox(redis, TimerStore(redis, shards=config.timers.shards))

        def columns(d: dict[str, Any]) -> list[str]:
            return [d["id"], d["job"]["kind"], d["thread"], _when(d["at"]), d["reason"]]

        return _DeadList(outbox.letters, columns, outbox.retry_dead_letter)

    return _on_dead_list("dead letter", path, action, letter_id, store, creator, destinations=False, open_list=letters)


def dead_events(path: Path, action: str, msg_id: str | None, store: str | None, creator: str | None) -> int:
    """D5: lists, shows, replays or drops the stored events whose handler failed every attempt."""
    from bridge.engine.events import DeadEvents

    def events(redis: Redis, config: BridgeConfig) -> _DeadList:
        dead = DeadEvents(redis)

        def columns(d: dict[str, Any]) -> list[str]:
            return [d["msg_id"], d["tag"], d.get("thread", ""), _when(d.get("at", 0)), d["error"]]

        return _DeadList(dead.entries, columns, dead.retry)

    return _on_dead_list("dead event", path, action, msg_id, store, creator, destinations=True, open_list=events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bridge", description="Feige (飞鸽) ↔ Slack / Telegram bridge")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="json: one object per line, for a log pipeline"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the bridge service")
    p_serve.add_argument("--config", type=Path, required=True)
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument(
        "--demo", action="store_true", help="allow the example's demo secrets and emulator addresses (local only)"
    )
    p_serve.add_argument(
        "--role",
        choices=["all", "web", "worker"],
        default="all",
        help="web: take requests only; worker: handle stored events and timers only; all: both (default)",
    )

    p_check = sub.add_parser("check", help="validate a configuration file and print every problem")
    p_check.add_argument("--config", type=Path, required=True)
    p_check.add_argument(
        "--online", action="store_true", help="also ask Slack and Telegram whether the tokens, channels and chats work"
    )

    p_demo = sub.add_parser("demo", help="run the bridge against local sandboxes and narrate what happens")
    p_demo.add_argument("--config", type=Path, required=True)
    p_demo.add_argument("--serve", action="store_true", help="keep everything running afterwards")

    p_sandbox = sub.add_parser("sandbox", help="run a local stand-in for an outside service")
    p_sandbox.add_argument("service", choices=["platform"])
    p_sandbox.add_argument("--config", type=Path, required=True)
    p_sandbox.add_argument("--host", default="127.0.0.1")
    p_sandbox.add_argument("--port", type=int, default=8701)
    p_sandbox.add_argument("--bridge-url", help="where to push events (default: the config's server.public_url)")

    p_archive = sub.add_parser(
        "archive", help="the archive of finished work (ARCHIVE_URL, default var/archive.sqlite3)"
    )
    p_archive.add_argument("action", choices=["migrate"])
    p_export = sub.add_parser("export", help="write task orders or chats out of the archive")
    p_export.add_argument("what", choices=["tasks", "chats"])
    p_export.add_argument("--config", type=Path, required=True)
    p_export.add_argument(
        "--status", default="all", help="tasks: pending, resolved, unresolvable, timed_out; chats: open, closed"
    )
    p_export.add_argument("--format", default="jsonl", choices=["jsonl", "csv", "xlsx"])
    p_export.add_argument("--store", help="one store's (its id)")
    p_export.add_argument("--since", type=date.fromisoformat, help="created (opened) on or after this day")
    p_export.add_argument("--until", type=date.fromisoformat, help="created (opened) on or before this day")
    p_export.add_argument("--out", type=Path, help="file to write (default: standard output)")

    p_stats = sub.add_parser("stats", help="response statistics (A9) from the archive")
    p_stats.add_argument("--config", type=Path, required=True)
    p_stats.add_argument("--store", help="one store's (its id)")
    p_stats.add_argument("--period", choices=["today", "7d", "30d"], help="a named period (default: today)")
    p_stats.add_argument("--since", type=date.fromisoformat, help="chats opened on or after this day")
    p_stats.add_argument("--until", type=date.fromisoformat, help="chats opened on or before this day")
    p_stats.add_argument("--format", default="text", choices=["text", "json"], help="json: with a row per day")

    p_telegram = sub.add_parser("telegram", help="set the bot's webhook or command menu, or long-poll")
    p_telegram.add_argument("action", choices=["set-webhook", "set-commands", "poll"])
    p_telegram.add_argument("--config", type=Path, required=True)
    p_telegram.add_argument("--bridge-url", help="poll: the bridge to hand updates to (default 127.0.0.1:server.port)")

    for command, what, helped in (
        ("dead-letters", "dead letter", "list, show, replay or drop what could not be delivered"),
        ("dead-events", "dead event", "list, show, replay or drop the events whose handling failed every attempt"),
    ):
        p_dead = sub.add_parser(command, help=helped)
        p_dead.add_argument("action", choices=["list", "show", "retry", "drop"])
        p_dead.add_argument("id", nargs="?", help=f"one {what}'s id (show, retry, drop)")
        p_dead.add_argument("--all", action="store_true", help=f"every {what} (retry, drop)")
        p_dead.add_argument("--config", type=Path, required=True)
        p_dead.add_argument("--store", help="only this store's")
        p_dead.add_argument("--creator", help="only this creator's")

    args = parser.parse_args(argv)
    if args.command in ("export", "stats") and args.since and args.until and args.since > args.until:
        parser.error(f"{args.command}: --since {args.since} is after --until {args.until}; no day is in between")
    if args.command == "stats" and args.period and (args.since or args.until):
        parser.error("stats: name a --period or days with --since/--until, not both")
    if args.command in ("dead-letters", "dead-events") and args.action == "show" and (args.id is None or args.all):
        parser.error(f"{args.command} show: name one id")
    if (
        args.command in ("dead-letters", "dead-events")
        and args.action not in ("list", "show")
        and (args.id is None) == (not args.all)
    ):
        parser.error(f"{args.command} {args.action}: name one id, or --all")
    if args.command == "check":
        return check(args.config, args.online)
    _setup_logging(args.verbose, args.log_format)
    if args.command == "serve":
        return serve(args.config, args.host, args.port, args.role, args.demo)
    if args.command == "dead-letters":
        return dead_letters(args.config, args.action, args.id, args.store, args.creator)
    if args.command == "dead-events":
        return dead_events(args.config, args.action, args.id, args.store, args.creator)
    if args.command == "archive":
        return archive_command(args.action)
    if args.command == "export":
        return export(args.config, args.what, args.status, args.format, args.out, args.store, args.since, args.until)
    if args.command == "stats":
        return stats(args.config, args.store, args.period, args.since, args.until, args.format)
    if args.command == "telegram":
        return telegram_command(args.config, args.action, args.bridge_url)
    if args.command == "sandbox":
        return sandbox(args.config, args.host, args.port, args.bridge_url)
    from bridge.app.demo import run_demo

    return run_demo(args.config, keep_serving=args.serve)
