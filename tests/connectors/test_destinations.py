"""A destination is one package under connectors/: the core finds it, the configuration takes its
section and its ``<service>:<target>`` destinations, and the flows reach it — with nothing in
bridge/ or rules/ naming it."""

from __future__ import annotations

import ast
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge import config as config_module
from bridge.config import ConfigError, parse_config
from bridge.destinations import PLUGIN_GROUP, plugins
from bridge.engine.clock import ManualClock
from bridge.flows.views import Actor
from tests.conftest import EXAMPLE_CONFIG, start_stack

ROOT = Path(__file__).resolve().parents[2]
SERVICE_LIBRARIES = ("slack_sdk", "slack_bolt", "telegram", "connectors.slack", "connectors.telegram")

ECHO_PACKAGE = '''
"""A third destination for the test: keeps what the flows send it, and answers with a reply."""
from pydantic import Field

from bridge.config import SettingsModel
from bridge.core import Core
from bridge.destinations import DestinationPlugin


class EchoSettings(SettingsModel):
    room_prefix: str = Field(default="room")


class EchoConnector:
    def __init__(self, settings, core):
        self.core, self.sent = core, []

    def routes(self):
        return []

    def delivery_handlers(self):
        return {}

    def senders(self):
        async def keep(job):
            self.sent.append((job.kind, job.payload))
        return {f"echo.{action}": keep for action in ("post", "update_root", "ephemeral", "react")}

    async def fetch_file(self, ref):
        return b""

    async def start(self, serve_webhooks):
        pass

    async def ready(self):
        pass

    def unreachable(self):
        return None

    async def stop(self):
        pass


DESTINATION = DestinationPlugin("echo", EchoSettings, EchoConnector, "<room>")
'''


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_destination_packages_are_found() -> None:
    assert set(plugins()) == {"slack", "telegram"}


def test_an_unknown_destination_is_refused_naming_the_forms() -> None:
    tree = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    tree["stores"][1]["destinations"]["platform_chats"] = "lark:oc_123"
    with pytest.raises(ConfigError) as refused:
        parse_config(yaml.safe_dump(tree, allow_unicode=True), environ={})
    assert (
        "store 1002 (stores[1]): destinations.platform_chats: destination 'lark:oc_123' is not of the form "
        "slack:<channel id> or telegram:<chat id>" in str(refused.value)
    )


@pytest.fixture
def echo_destination(tmp_path: Path) -> Iterator[Path]:
    """A destination installed as its own distribution: a package and its entry point."""
    site = tmp_path / "site"
    package = site / "echo_destination"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(ECHO_PACKAGE), encoding="utf-8")
    info = site / "echo_destination-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-destination\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\necho = echo_destination:DESTINATION\n", encoding="utf-8")
    sys.path.append(str(site))
    plugins.cache_clear()
    config_module._config_model.cache_clear()
    tree = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    tree["echo"] = {"room_prefix": "room"}
    tree["stores"][1]["destinations"] = {"platform_chats": "echo:room-1", "task_orders": "echo:room-1"}
    for agent in tree["stores"][1]["agents"]:
        agent["accounts"] = {"echo": f"echo-{agent['id']}"}
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    yield path
    sys.path.remove(str(site))
    sys.modules.pop("echo_destination", None)
    plugins.cache_clear()
    config_module._config_model.cache_clear()


async def test_a_third_destination_is_one_package(echo_destination: Path, redis_url: str, redis: object) -> None:
    stack = await start_stack(redis_url, config_path=echo_destination, clock=ManualClock(), run_workers=False)
    try:
        echo = stack.bridge.connectors["echo"]
        cid = await stack.sandbox.open_chat("1002", {"type": "text", "text": "Is it in stock?"})
        await stack.settle()
        [(kind, payload)] = echo.sent  # type: ignore[attr-defined]
        assert kind == "echo.post" and payload["channel"] == "room-1" and payload["root"] is True
        view = payload["view"]
        assert view["type"] == "chat_root" and view["first_message"]["content"]["text"] == "Is it in stock?"
        assert view["mentions"] == ["main-1002"], "the assignee, whom the connector mentions its own way"
        # What the connector's inbound route would do with a person's message in the chat's thread:
        store = stack.bridge.holder.current.stores[1]
        await stack.bridge.chats.reply(
            store, cid, Actor("echo", "echo-main-1002", "room-1", None, "m1"), "In stock, ships today"
        )
        await stack.settle()
        sent = [m["content"] for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]
        assert sent == [{"type": "text", "text": "In stock, ships today"}], "the person matched by accounts.echo"
    finally:
        await stack.stop()
