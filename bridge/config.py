"""Per-store and per-creator configuration (PRODUCT C1): YAML files, secrets by environment reference.

Loading is two steps. ``${NAME}`` / ``${NAME:-default}`` references in string values are resolved
first (a missing variable is a problem naming it and where it is used), then the result is
validated by the pydantic models below. Every problem found is reported with its path in the file
and what to do about it; nothing is half-loaded.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import time
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from rules import deadline, reply_window

Locale = Literal["zh-CN", "en"]

log = logging.getLogger(__name__)
DEFAULT_NOTE_MARKERS = ("//", "#note")
DEFAULT_TIMEZONE = "Asia/Shanghai"  # the platform's own (Douyin e-commerce runs on China time)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DESTINATION = re.compile(r"^([a-z][a-z0-9_]*):(\S+)$")
_IN_LIST = re.compile(r"^(stores|creators)\[(\d+)\]\.?(.*)$")
_STORE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Model(BaseModel):
    # Unquoted YAML ids such as `id: 1001` arrive as numbers; they are ids, not quantities.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


SettingsModel = _Model
"""The base of a destination's configuration section (``connectors/<service>/settings.py``)."""


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
    return value


def _check_id(value: str) -> str:
    if not _STORE_ID.match(value):
        raise ValueError("an id may use letters, digits, '-' and '_' only (it is part of a URL)")
    return value


def _check_destination(value: str) -> str:
    from bridge.destinations import plugins

    known = plugins()
    match = _DESTINATION.match(value)
    if not match or match.group(1) not in known:
        forms = " or ".join(f"{p.service}:{p.target}" for p in known.values())
        raise ValueError(f"destination {value!r} is not of the form {forms}")
    plugin = known[match.group(1)]
    if not re.fullmatch(plugin.target_pattern, value.split(":", 1)[1]):
        raise ValueError(f"{value!r}: the target must be {plugin.target_hint or plugin.target}")
    return value


class Destination(_Model):
    """Where one kind of work is mirrored: ``<service>:<target>``, e.g. ``slack:<channel>`` or
    ``telegram:<chat>`` (the services are the destination packages, ``bridge/destinations.py``)."""

    service: str
    target: str

    @classmethod
    def parse(cls, value: str) -> Destination:
        service, target = _check_destination(value).split(":", 1)
        return cls(service=service, target=target)

    def __str__(self) -> str:
        return f"{self.service}:{self.target}"


class PlatformCredentials(_Model):
    app_key: str = Field(min_length=1)
    app_secrets: list[str] = Field(min_length=1, description="newest first; all are accepted (rotation)")
    api_url: str = Field(pattern=r"^https?://")
    api_token: str = Field(min_length=1)


class _Person(_Model):
    """Someone the bridge recognises in the destinations: ``accounts`` maps each service to their
    id there. The older ``slack_user: U…`` / ``telegram_user: 123`` (any ``<service>_user``) are read
    as entries of it, so existing files still load."""

    accounts: dict[str, str] = Field(default_factory=dict, description="their id in each destination, by service")

    @model_validator(mode="before")
    @classmethod
    def _accounts_from_older_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        older = {k: v for k, v in data.items() if isinstance(k, str) and k.endswith("_user") and v is not None}
        if not older:
            return data
        accounts = {k.removesuffix("_user"): str(v) for k, v in older.items()}
        given = data.get("accounts")
        accounts |= {str(k): str(v) for k, v in given.items()} if isinstance(given, dict) else {}
        return {k: v for k, v in data.items() if k not in older} | {"accounts": accounts}

    @field_validator("accounts")
    @classmethod
    def _accounts_are_ids(cls, accounts: dict[str, str]) -> dict[str, str]:
        """Each id as the service's events carry it: a person written by name is never recognised,
        so everything they do would be refused as a stranger's."""
        from bridge.destinations import plugins

        known = plugins()
        for service, account in accounts.items():
            plugin = known.get(service)
            if plugin is not None and not re.fullmatch(plugin.account_pattern, account):
                raise ValueError(f"{service}: {account!r} must be {plugin.account_hint or 'their id there'}")
        return accounts

    def identity(self, service: str) -> str | None:
        """Who this person is in ``service`` (a Slack user id, a Telegram user id, …)."""
        return self.accounts.get(service)


class Agent(_Person):
    id: str = Field(min_length=1, description="the agent's platform (Feige) account id")
    name: str = Field(min_length=1)
    im_permission: bool = True


class ReplyWindow(_Model):
    seconds: int = Field(default=reply_window.WINDOW_SECONDS, ge=1)
    reminders_before: list[int] = Field(default_factory=lambda: list(reply_window.REMINDERS_BEFORE))
    escalate_before: int | None = Field(
        default=None, ge=1, description="also mention the other designated agents this long before"
    )


class QuietHours(_Model):
    start: time = deadline.QUIET_START
    end: time = deadline.QUIET_END


class TaskOrderSettings(_Model):
    deadline_hours: int = Field(default=deadline.DEADLINE_HOURS, ge=1)
    quiet_hours: QuietHours = QuietHours()
    night_rule: Literal["move_to_morning", "carry_over"] = "move_to_morning"
    reminders_before: list[int] = Field(default_factory=lambda: list(deadline.REMINDERS_BEFORE))
    digest_at: time | None = Field(
        default=deadline.DIGEST_AT, description="the morning digest of task orders due that day; null: none"
    )


class StoreDestinations(_Model):
    platform_chats: str
    task_orders: str

    _v = field_validator("platform_chats", "task_orders")(_check_destination)


class Store(_Model):
    id: str
    name: str = Field(min_length=1)
    locale: Locale = "zh-CN"
    timezone: str = DEFAULT_TIMEZONE
    sandbox: bool = False
    platform: PlatformCredentials
    destinations: StoreDestinations
    main_account: str
    agents: list[Agent] = Field(min_length=1)
    designated_agents: list[str] | None = Field(
        default=None, description="agent ids who may answer platform chats; default: the main account"
    )
    reply_window: ReplyWindow = ReplyWindow()
    task_orders: TaskOrderSettings = TaskOrderSettings()
    note_markers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NOTE_MARKERS),
        description="a message in a thread that starts with one of these stays in the team's thread",
    )

    _tz = field_validator("timezone")(_check_timezone)
    _id = field_validator("id")(_check_id)

    def agent(self, service: str, user: str) -> Agent | None:
        """The store's agent who is ``user`` in ``service`` (their ``accounts`` entry there)."""
        return next((a for a in self.agents if a.identity(service) == user), None)

    def agent_name(self, agent_id: str) -> str:
        """How the store calls an agent: their name, or the id of one no longer configured."""
        return next((a.name for a in self.agents if a.id == agent_id), agent_id)

    @property
    def designated(self) -> list[Agent]:
        ids = self.designated_agents or [self.main_account]
        by_id = {a.id: a for a in self.agents}
        return [by_id[i] for i in ids if i in by_id]

    @property
    def webhook_path(self) -> str:
        return f"/webhooks/platform/{self.id}"


class Creator(_Person):
    id: str
    name: str = Field(min_length=1)
    locale: Locale = "zh-CN"
    timezone: str = DEFAULT_TIMEZONE
    platform: PlatformCredentials
    destination: str

    _tz = field_validator("timezone")(_check_timezone)
    _dest = field_validator("destination")(_check_destination)
    _id = field_validator("id")(_check_id)

    @property
    def webhook_path(self) -> str:
        return f"/webhooks/creator/{self.id}"


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    config_poll_seconds: float = Field(default=2.0, gt=0)
    access_log: bool = False
    held_dir: str = Field(
        default="var/held", min_length=1,
        description="local disk for deliveries a service sends for the last time while Redis is down",
    )  # fmt: skip


class TimerSettings(_Model):
    shards: int = Field(default=1, ge=1, le=1024)
    lease_seconds: float = Field(default=5.0, gt=0)
    concurrency: int = Field(default=200, ge=1)


class OutboxSettings(_Model):
    retry_base_seconds: float = Field(default=1.0, gt=0, description="the first retry's wait; doubled each time")
    retry_max_seconds: float = Field(default=60.0, gt=0, description="the longest wait between two tries")
    finished_grace_seconds: float = Field(
        default=24 * 3600.0, ge=0, description="how long a finished chat's or task order's messages are still sent"
    )


NOWHERE: tuple[None, None, None] = (None, None, None)
"""``BridgeConfig.at`` of a destination no store or creator names."""


class BridgeConfig(_Model):
    server: ServerSettings = ServerSettings()
    timers: TimerSettings = TimerSettings()
    outbox: OutboxSettings = OutboxSettings()
    stores: list[Store] = Field(default_factory=list)
    creators: list[Creator] = Field(default_factory=list)
    # …and one optional section per destination (``slack:``, ``telegram:``), added by _config_model.

    def settings_of(self, service: str) -> Any:
        """A destination's configuration section, or None when it is not configured."""
        return getattr(self, service, None)

    def store(self, store_id: str) -> Store | None:
        return self._stores_by_id.get(store_id)

    def creator(self, creator_id: str) -> Creator | None:
        return self._creators_by_id.get(creator_id)

    @cached_property
    def _stores_by_id(self) -> dict[str, Store]:
        # Looked up for every push and event: an operator's file may list many stores (each id once,
        # as loading checks). Built on first use: a config is only made by validation (load_config);
        # model_copy(update=…) would carry this index over, stale, so it is not used on configs.
        return {s.id: s for s in self.stores}

    @cached_property
    def _creators_by_id(self) -> dict[str, Creator]:
        return {c.id: c for c in self.creators}

    def at(self, destination: str) -> tuple[Store | None, Store | None, Creator | None]:
        """Whose a destination (``slack:C0123``) is: the store whose task orders go there, the store
        whose chats go there, the creator who is pinged there (the first of each in the file)."""
        return self._by_destination.get(destination, NOWHERE)

    @cached_property
    def _by_destination(self) -> dict[str, tuple[Store | None, Store | None, Creator | None]]:
        # Every message and click from a chat tool is placed by its channel: one lookup, not a scan
        # of every store (an operator's file may list thousands).
        tasks: dict[str, Store] = {}
        chats: dict[str, Store] = {}
        creators: dict[str, Creator] = {}
        for store in self.stores:
            tasks.setdefault(store.destinations.task_orders, store)
            chats.setdefault(store.destinations.platform_chats, store)
        for creator in self.creators:
            creators.setdefault(creator.destination, creator)
        return {d: (tasks.get(d), chats.get(d), creators.get(d)) for d in {*tasks, *chats, *creators}}

    def targets(self, service: str) -> list[tuple[str, str]]:
        """Every (path in the file, target) on ``service``, for its online probe."""
        found = []
        for i, store in enumerate(self.stores):
            for name in ("platform_chats", "task_orders"):
                service_of, _, target = getattr(store.destinations, name).partition(":")
                if service_of == service:
                    found.append((f"stores[{i}].destinations.{name}", target))
        for i, creator in enumerate(self.creators):
            service_of, _, target = creator.destination.partition(":")
            if service_of == service:
                found.append((f"creators[{i}].destination", target))
        return found


@cache
def _config_model() -> type[BridgeConfig]:
    """BridgeConfig with a section for each destination package found (``bridge/destinations.py``)."""
    from bridge.destinations import plugins

    sections: dict[str, Any] = {p.service: (p.settings | None, None) for p in plugins().values()}
    return create_model("BridgeConfig", __base__=BridgeConfig, **sections)


# -- problems --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"

    def located(self, ids: Mapping[str, Sequence[object]]) -> Problem:
        """The path as people know it: ``stores[0].platform.app_secrets`` becomes ``store 1001
        (stores[0]): platform.app_secrets`` — the id first (``ids``: the ids of ``stores`` and
        ``creators``, in the file's order), then where in the file."""
        match = _IN_LIST.match(self.path)
        if match is None:
            return self
        section, index, rest = match.group(1), int(match.group(2)), match.group(3)
        known = ids.get(section, [])
        owner = f"{section[:-1]} {known[index]} " if index < len(known) and known[index] not in (None, "") else ""
        where = f"{owner}({section}[{index}])" if owner else f"{section}[{index}]"
        return replace(self, path=f"{where}: {rest}" if rest else where)


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        lines = "\n".join(f"  {p}" for p in errors)
        super().__init__(f"{source}: {len(errors)} problem(s) in the configuration:\n{lines}")


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in {"function-after", "function-before"}:
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def resolve_env(
    node: Any, environ: Mapping[str, str], where: str = "", defaults: list[tuple[str, str]] | None = None
) -> tuple[Any, list[Problem]]:
    """Replaces ``${NAME}`` and ``${NAME:-default}`` in every string of a parsed YAML tree; each
    (path, NAME) whose default was taken goes into ``defaults``."""
    problems: list[Problem] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str):

            def sub(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                if environ.get(name) == "":  # set but empty is a mistake, never a silent fallback
                    problems.append(Problem(path, f"environment variable {name} is set but empty"))
                    return ""
                if default is not None:  # unset: the default
                    if name not in environ and defaults is not None:
                        defaults.append((path, name))
                    return environ.get(name, default)
                if name in environ:
                    return environ[name]
                problems.append(
                    Problem(path, f"environment variable {name} is not set; set it or write ${{{name}:-default}}")
                )
                return ""

            return _ENV_REF.sub(sub, value)
        return value

    return walk(node, where), problems


def _semantic_problems(config: BridgeConfig) -> list[Problem]:
    problems: list[Problem] = []

    def dupes(ids: list[str], what: str, path: str) -> None:
        seen: set[str] = set()
        for i, value in enumerate(ids):
            if value in seen:
                problems.append(Problem(f"{path}[{i}].id", f"{what} id {value!r} is used twice"))
            seen.add(value)

    dupes([s.id for s in config.stores], "store", "stores")
    dupes([c.id for c in config.creators], "creator", "creators")
    keys_seen: dict[str, str] = {}
    for label, item in [(f"stores[{i}]", s) for i, s in enumerate(config.stores)] + [
        (f"creators[{i}]", c) for i, c in enumerate(config.creators)
    ]:
        key = item.platform.app_key
        if key in keys_seen:
            problems.append(
                Problem(
                    f"{label}.platform.app_key",
                    f"app key is also used by {keys_seen[key]}; each needs its own",
                )
            )
        keys_seen.setdefault(key, label)

    # Every message and click is placed by its channel (``BridgeConfig.at``): a second store's chats,
    # a second store's task orders or a second creator in one channel could not be told apart from
    # the first's, and would be answered as the first's.
    places = [(f"stores[{i}].destinations.{kind}", getattr(s.destinations, kind), kind, f"store {s.id}")
              for kind in ("platform_chats", "task_orders") for i, s in enumerate(config.stores)]  # fmt: skip
    places += [(f"creators[{i}].destination", c.destination, "creator", f"creator {c.id}")
               for i, c in enumerate(config.creators)]  # fmt: skip
    taken: dict[tuple[str, str], str] = {}
    for path, destination, kind, owner in places:
        if (first := taken.setdefault((kind, destination), owner)) != owner:
            what = {"platform_chats": "platform chats", "task_orders": "task orders", "creator": "pings"}[kind]
            problems.append(Problem(path, f"{destination} already has the {what} of {first}; each needs a place of "
                                          "its own, or a message there would be taken as the first's"))  # fmt: skip

    for i, store in enumerate(config.stores):
        at = f"stores[{i}]"
        agent_ids = [a.id for a in store.agents]
        for j, agent in enumerate(store.agents):
            if agent_ids.index(agent.id) != j:
                problems.append(Problem(f"{at}.agents[{j}].id", f"agent id {agent.id!r} is listed twice"))
        if store.main_account not in agent_ids:
            problems.append(
                Problem(f"{at}.main_account", f"{store.main_account!r} is not among {at}.agents; add it there")
            )
        for j, agent_id in enumerate(store.designated_agents or []):
            if agent_id not in agent_ids:
                problems.append(
                    Problem(f"{at}.designated_agents[{j}]", f"{agent_id!r} is not among {at}.agents; add it there")
                )
        designated_ids = store.designated_agents or [store.main_account]
        for j, agent in enumerate(store.agents):
            if agent.id in designated_ids and not agent.im_permission:
                problems.append(
                    Problem(
                        f"{at}.agents[{j}]",
                        "im_permission is false — this agent can never answer platform chats (main account: "
                        "商家后台 → 店铺 → 子账号管理 → 账号管理 → enable IM, save; then set im_permission: true)",
                        "warning",
                    )
                )
        if store.designated and not any(a.im_permission for a in store.designated):
            problems.append(
                Problem(f"{at}.designated_agents", "no designated agent has IM permission: nobody could answer")
            )
        service = store.destinations.platform_chats.split(":", 1)[0]
        for agent in store.designated:
            if agent.identity(service) is None:
                field_name = f"{service}_user" if f"{service}_user" in Agent.model_fields else f"accounts.{service}"
                problems.append(
                    Problem(
                        f"{at}.agents[{agent_ids.index(agent.id)}].{field_name}",
                        f"designated agent {agent.id!r} has no {field_name}, so they cannot answer in {service}",
                        "warning",
                    )
                )
        window = store.reply_window
        if (allowed := reply_window.window_allowed(window.seconds, store.sandbox)) is not None:
            hint = "" if store.sandbox else " (set sandbox: true for demos and trials with shorter windows)"
            problems.append(
                Problem(
                    f"{at}.reply_window.seconds",
                    f"{window.seconds} s is outside {allowed[0]}–{allowed[1]} s; the platform closes chats after 2–3 "
                    f"minutes{hint}",
                )
            )
        for j, before in enumerate(window.reminders_before):
            if not 0 < before < window.seconds:
                problems.append(
                    Problem(
                        f"{at}.reply_window.reminders_before[{j}]",
                        f"{before} s must be between 0 and the window ({window.seconds} s)",
                    )
                )
        if window.escalate_before is not None and window.escalate_before >= window.seconds:
            problems.append(Problem(f"{at}.reply_window.escalate_before", "must be shorter than the reply window"))
        deadline_s = store.task_orders.deadline_hours * 3600
        for j, before in enumerate(store.task_orders.reminders_before):
            if not 0 < before < deadline_s:
                problems.append(
                    Problem(
                        f"{at}.task_orders.reminders_before[{j}]",
                        f"{before} s must be between 0 and the deadline ({deadline_s} s)",
                    )
                )
        quiet = store.task_orders.quiet_hours
        if quiet.start == quiet.end:
            problems.append(Problem(f"{at}.task_orders.quiet_hours", "start and end are equal"))
        for dest_name in ("platform_chats", "task_orders"):
            service = getattr(store.destinations, dest_name).split(":", 1)[0]
            if config.settings_of(service) is None:
                problems.append(
                    Problem(
                        f"{at}.destinations.{dest_name}",
                        f"uses {service} but the {service}: section is missing",
                    )
                )
    for i, creator in enumerate(config.creators):
        service = creator.destination.split(":", 1)[0]
        if config.settings_of(service) is None:
            problems.append(
                Problem(f"creators[{i}].destination", f"uses {service} but the {service}: section is missing")
            )
    return problems


@dataclass(frozen=True)
class LoadedConfig:
    config: BridgeConfig
    source: str
    warnings: list[Problem]
    demo_values: list[Problem] = field(default_factory=list)
    """Settings left at the example's demo default (secrets, emulator addresses)."""

    def headline(self) -> str:
        return (
            f"{self.source}: valid — {len(self.config.stores)} store(s), {len(self.config.creators)} creator(s), "
            f"{len(self.warnings)} warning(s)"
        )


def parse_config(text: str, *, source: str = "<config>", environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Parses and validates; raises ConfigError listing every problem found."""
    env = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        message = f"not valid YAML: {what}" + (f" ({context})" if context else "")
        raise ConfigError(source, [Problem(where, message)]) from None
    if raw is None:
        raise ConfigError(source, [Problem("(file)", "the file is empty: it needs at least one store or creator "
                                                     "(config/example.yaml shows every setting)")])  # fmt: skip
    if not isinstance(raw, dict):
        raise ConfigError(source, [Problem("(top level)", "must be a mapping with stores:, creators:, …")])
    defaults: list[tuple[str, str]] = []
    resolved, problems = resolve_env(raw, env, defaults=defaults)
    try:
        config = _config_model().model_validate(resolved)
    except ValidationError as exc:
        unresolved = {p.path for p in problems}
        for err in exc.errors():
            if _path(err["loc"]) in unresolved:
                continue  # already reported as the missing variable that caused it
            problems.append(Problem(_path(err["loc"]), _in_plain_words(err)))
        problems += _problems_of_the_rest(resolved, exc)
        raise ConfigError(source, _located(problems, resolved)) from None
    problems = _located(problems + _semantic_problems(config), resolved)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(source, problems)
    demo = [Problem(path, f"{name} is not set, so the example's demo value is used: it only works against the "
                          "local emulators") for path, name in defaults if _DEMO_ONLY.search(path)]  # fmt: skip
    return LoadedConfig(config, source, [p for p in problems if p.severity == "warning"], demo)


_DEMO_ONLY = re.compile(r"(token|secret|app_key|api_url|api_base_url|file_base_url)[^.]*$")
"""Settings whose example default is a demo value (a secret, an emulator's address): ``bridge serve``
refuses to start on them unless told ``--demo``."""


def _problems_of_the_rest(tree: dict[str, Any], exc: ValidationError) -> list[Problem]:
    """The checks across fields, run on what is well formed — the file without the stores, creators
    and sections that have errors — so one run of ``bridge check`` reports every problem, not the
    value problems only once the structural ones are fixed."""
    bad_items: dict[str, set[int]] = {"stores": set(), "creators": set()}
    bad_sections: set[str] = set()
    for err in exc.errors():
        loc = err["loc"]
        if len(loc) > 1 and loc[0] in bad_items and isinstance(loc[1], int):
            bad_items[str(loc[0])].add(loc[1])
        elif loc:
            bad_sections.add(str(loc[0]))
    rest: dict[str, Any] = {k: v for k, v in tree.items() if k not in bad_sections}
    kept: dict[str, list[int]] = {}
    for name, bad in bad_items.items():
        if isinstance(tree.get(name), list):
            kept[name] = [i for i in range(len(tree[name])) if i not in bad]
            rest[name] = [tree[name][i] for i in kept[name]]
    try:
        config = _config_model().model_validate(rest)
    except ValidationError:
        return []  # not even the rest stands on its own: the errors above come first

    def original(match: re.Match[str]) -> str:
        return f"{match.group(1)}[{kept[match.group(1)][int(match.group(2))]}]"

    return [replace(p, path=_ITEM.sub(original, p.path, count=1)) for p in _semantic_problems(config)]


_ITEM = re.compile(r"^(stores|creators)\[(\d+)\]")


def _located(problems: list[Problem], tree: Any) -> list[Problem]:
    ids = {section: [entry.get("id") if isinstance(entry, dict) else None for entry in tree.get(section) or []]
           for section in ("stores", "creators") if isinstance(tree.get(section), list)}  # fmt: skip
    return [p.located(ids) for p in problems]


_NOUNS = {"app_secrets": "secret", "agents": "agent", "reminders_before": "reminder"}


def _in_plain_words(err: Any) -> str:
    """A validation error as a person reads it (pydantic's own wording is for programmers)."""
    kind, ctx, where = err["type"], err.get("ctx") or {}, err["loc"][-1] if err["loc"] else ""
    noun = _NOUNS.get(str(where), str(where).replace("_", " ").removesuffix("s")) if isinstance(where, str) else "entry"
    least = ctx.get("min_length", 1)
    plain = {
        "extra_forbidden": "unknown setting (check the spelling against docs/configuration.md)",
        "missing": "required setting is missing",
        "too_short": f"at least {'one' if least == 1 else least} {noun} is needed",
        "string_too_short": "must not be empty",
        "string_pattern_mismatch": f"does not have the expected form (it must match {ctx.get('pattern')})",
        "string_type": "must be text",
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "greater_than": f"must be more than {ctx.get('gt')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "less_than": f"must be less than {ctx.get('lt')}",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "time_parsing": "must be a time of day such as 21:00",
        "time_type": "must be a time of day such as 21:00",
        "list_type": "must be a list",
        "dict_type": "must be a mapping (name: value lines)",
        "model_type": "must be a mapping (name: value lines)",
        "model_attributes_type": "must be a mapping (name: value lines)",
    }.get(kind)
    return plain if plain is not None else str(err["msg"]).removeprefix("Value error, ")


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem("(file)", f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, source=str(path), environ=environ)


class ConfigHolder:
    """The configuration in force, replaced only by a new one that validates (PRODUCT C1)."""

    def __init__(self, path: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.environ = environ
        loaded = load_config(path, environ)
        self.current: BridgeConfig = loaded.config
        self.warnings = loaded.warnings
        self.demo_values = loaded.demo_values
        self.generation = 1
        self.last_error: ConfigError | None = None
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def reload(self) -> bool:
        """Loads the file again; on any problem keeps the old configuration and returns False."""
        self._mtime = self._stat()
        try:
            loaded = load_config(self.path, self.environ)
        except ConfigError as exc:
            self.last_error = exc
            log.error("configuration NOT reloaded, the previous one stays in force. %s", exc)
            return False
        self.current, self.warnings = loaded.config, loaded.warnings
        self.generation += 1
        self.last_error = None
        for warning in loaded.warnings:
            log.warning("%s: %s", self.path, warning)
        log.info("configuration reloaded from %s (generation %d)", self.path, self.generation)
        return True

    def changed_on_disk(self) -> bool:
        return self._stat() != self._mtime
