"""Per-store configuration: env references, validation with paths and fixes, `bridge check`, reload."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from bridge.config import BridgeConfig, ConfigError, ConfigHolder, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yaml"


def example_tree() -> dict:  # type: ignore[type-arg]
    tree = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(tree, dict)
    return tree


def problems_of(tree: dict, environ: dict[str, str] | None = None) -> list[str]:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(tree, allow_unicode=True), environ=environ or {})
    return [str(p) for p in info.value.problems]


def test_example_is_valid_with_demo_defaults() -> None:
    loaded = load_config(EXAMPLE, environ={})
    config = loaded.config
    assert loaded.warnings == []
    store = config.stores[0]
    assert store.id == "1001" and store.platform.app_secrets == ["demo-app-secret-1001"]
    assert [a.id for a in store.designated] == ["main-1001", "agent-a", "agent-b"]
    assert store.reply_window.seconds == 120 and store.reply_window.reminders_before == [60, 30]
    assert store.task_orders.deadline_hours == 24 and store.task_orders.reminders_before == [7200, 1800]
    assert str(store.task_orders.quiet_hours.start) == "21:00:00"
    slack = config.settings_of("slack")
    assert slack is not None and slack.api_base_url.startswith("http://127.0.0.1")
    assert config.creators[0].webhook_path == "/webhooks/creator/c-7001"


def test_environment_references_are_resolved() -> None:
    env = {"STORE_1001_APP_SECRET": "s3cret", "SLACK_API_URL": "https://slack.example/api/"}
    config = load_config(EXAMPLE, environ=env).config
    assert config.stores[0].platform.app_secrets == ["s3cret"]
    slack = config.settings_of("slack")
    assert slack is not None and slack.api_base_url == "https://slack.example/api/"


def test_missing_environment_variable_is_named_with_its_path() -> None:
    tree = example_tree()
    tree["stores"][0]["platform"]["api_token"] = "${STORE_TOKEN_NOT_SET}"
    assert problems_of(tree) == [
        "error: store 1001 (stores[0]): platform.api_token: environment variable STORE_TOKEN_NOT_SET is not set; "
        "set it or write ${STORE_TOKEN_NOT_SET:-default}"
    ]


def test_designated_agent_without_im_permission_is_a_warning_with_the_fix() -> None:
    tree = example_tree()
    tree["stores"][0]["agents"][1]["im_permission"] = False
    loaded = parse_config(yaml.safe_dump(tree, allow_unicode=True), environ={})
    assert [str(w) for w in loaded.warnings] == [
        "warning: store 1001 (stores[0]): agents[1]: im_permission is false — this agent can never answer "
        "platform chats "
        "(main account: 商家后台 → 店铺 → 子账号管理 → 账号管理 → enable IM, save; then set im_permission: true)"
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda t: t["stores"][0].update(sandbox=False, reply_window={"seconds": 10}),
            "error: store 1001 (stores[0]): reply_window.seconds: 10 s is outside 60–180 s; the platform closes "
            "chats after "
            "2–3 minutes (set sandbox: true for demos and trials with shorter windows)",
        ),
        (
            lambda t: t["stores"][0].update(reply_window={"seconds": 240}),
            "error: store 1001 (stores[0]): reply_window.seconds: 240 s is outside 1–180 s; the platform closes "
            "chats after "
            "2–3 minutes",
        ),
        (
            lambda t: t["stores"][0]["reply_window"].update(reminders_before=[60, 130]),
            "error: store 1001 (stores[0]): reply_window.reminders_before[1]: 130 s must be between 0 and the "
            "window (120 s)",
        ),
        (
            lambda t: t["stores"][0].update(timezone="Mars/Olympus"),
            "error: store 1001 (stores[0]): timezone: unknown time zone 'Mars/Olympus'; use an IANA name such as "
            "Asia/Shanghai",
        ),
        (
            lambda t: t["stores"][0]["destinations"].update(task_orders="discord:123"),
            "error: store 1001 (stores[0]): destinations.task_orders: destination 'discord:123' is not of the form "
            "slack:<channel id> or telegram:<chat id>",
        ),
        (
            lambda t: t["creators"][0].update(destination="telegram:@xiaomei"),
            "error: creator c-7001 (creators[0]): destination: 'telegram:@xiaomei': the target must be a chat's "
            "numeric id such as 123456789, or -1001234567890 for a group, not a @username (/start or /help in the "
            "chat shows it)",
        ),
        (
            lambda t: t["stores"][0]["destinations"].update(platform_chats="slack:#feige-chats"),
            "error: store 1001 (stores[0]): destinations.platform_chats: 'slack:#feige-chats': the target must be "
            "a channel's id such as C0123ABCD, not its #name (`/feige help` in the channel shows it)",
        ),
        (
            lambda t: t["stores"][1]["destinations"].update(task_orders="slack:C0TASKS1001"),
            "error: store 1002 (stores[1]): destinations.task_orders: slack:C0TASKS1001 already has the task orders "
            "of store 1001; each needs a place of its own, or a message there would be taken as the first's",
        ),
        (
            lambda t: t["creators"][1].update(destination="telegram:7001"),
            "error: creator c-7002 (creators[1]): destination: telegram:7001 already has the pings of creator "
            "c-7001; each needs a place of its own, or a message there would be taken as the first's",
        ),
        (
            lambda t: t["stores"][0]["agents"][1]["accounts"].update(slack="@alice"),
            "error: store 1001 (stores[0]): agents[1].accounts: slack: '@alice' must be a member ID such as "
            "U0123ABCD, not a @name (in Slack: the person's profile → ⋮ → Copy member ID; `/feige help` shows "
            "one's own)",
        ),
        (
            lambda t: t["creators"][0].update(accounts={"telegram": "@xiaomei"}),
            "error: creator c-7001 (creators[0]): accounts: telegram: '@xiaomei' must be a numeric user id such as "
            "123456789, not a @username (/help to the bot shows one's own)",
        ),
        (
            lambda t: t["stores"][0].update(main_account="nobody"),
            "error: store 1001 (stores[0]): main_account: 'nobody' is not among stores[0].agents; add it there",
        ),
        (
            lambda t: t["stores"][0].update(designated_agents=["main-1001", "ghost"]),
            "error: store 1001 (stores[0]): designated_agents[1]: 'ghost' is not among stores[0].agents; add it there",
        ),
        (
            lambda t: t["stores"][1].update(id="1001"),
            "error: store 1001 (stores[1]): id: store id '1001' is used twice",
        ),
        (
            lambda t: t["stores"][0].update(colour="red"),
            "error: store 1001 (stores[0]): colour: unknown setting (check the spelling against docs/configuration.md)",
        ),
        (
            lambda t: t["stores"][0]["platform"].pop("app_secrets"),
            "error: store 1001 (stores[0]): platform.app_secrets: required setting is missing",
        ),
        (
            lambda t: t["stores"][0]["task_orders"].update(night_rule="sleep_in"),
            "error: store 1001 (stores[0]): task_orders.night_rule: must be one of 'move_to_morning' or 'carry_over'",
        ),
        (
            lambda t: t.pop("telegram"),
            "error: store 1002 (stores[1]): destinations.platform_chats: uses telegram but the telegram: section "
            "is missing",
        ),
    ],
)
def test_each_problem_names_its_path_and_fix(edit, expected: str) -> None:  # type: ignore[no-untyped-def]
    tree = example_tree()
    edit(tree)
    assert expected in problems_of(tree)


def test_every_problem_is_reported_at_once() -> None:
    tree = example_tree()
    tree["stores"][0]["timezone"] = "Nowhere/Else"
    tree["stores"][1]["platform"]["api_url"] = "ftp://x"
    tree["creators"][0]["destination"] = "email:x"
    assert len(problems_of(tree)) == 3


def test_unquoted_numeric_ids_are_accepted() -> None:
    tree = example_tree()
    tree["stores"][0]["id"] = 1001
    config = parse_config(yaml.safe_dump(tree, allow_unicode=True), environ={}).config
    assert config.stores[0].id == "1001"


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_check_command_on_the_example() -> None:
    result = run_check(EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid — 2 store(s), 2 creator(s), 0 warning(s)" in result.stdout
    assert "store 1001" in result.stdout and "push /webhooks/platform/1001" in result.stdout
    assert "demo values: 20 variable(s) not set, so `bridge serve` refuses to start without --demo" in result.stdout


def test_check_command_reports_every_problem_and_fails(tmp_path: Path) -> None:
    tree = example_tree()
    tree["stores"][1]["agents"][0]["im_permission"] = False
    tree["stores"][0]["reply_window"]["seconds"] = 500
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tree, allow_unicode=True))
    result = run_check(bad)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any("store 1001 (stores[0]): reply_window.seconds: 500 s is outside 1–180 s" in line for line in lines)
    assert any("warning: store 1002 (stores[1]): agents[0]: im_permission is false" in line for line in lines)
    assert any(
        "error: store 1002 (stores[1]): designated_agents: no designated agent has IM permission" in line
        for line in lines
    )
    assert lines[-1].endswith("2 error(s), 1 warning(s) — not valid")


def test_check_command_on_unreadable_and_malformed_files(tmp_path: Path) -> None:
    result = run_check(tmp_path / "missing.yaml")
    assert result.returncode == 1 and "cannot read" in result.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("stores:\n  - id: '1001'\n   name: x\n")
    result = run_check(broken)
    assert result.returncode == 1
    assert f"{broken}: error: line 3, column 4: not valid YAML: expected <block end>" in result.stdout
    assert "<unicode string>" not in result.stdout
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    result = run_check(empty)
    assert result.returncode == 1 and "the file is empty" in result.stdout


def test_reload_keeps_old_config_when_new_one_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(EXAMPLE.read_text())
    holder = ConfigHolder(path, environ={})
    assert holder.generation == 1

    tree = example_tree()
    tree["stores"][0]["reply_window"]["seconds"] = 90
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    assert holder.changed_on_disk()
    assert holder.reload() is True
    assert holder.generation == 2 and holder.current.stores[0].reply_window.seconds == 90

    tree["stores"][0]["reply_window"]["seconds"] = 9999
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    assert holder.reload() is False
    assert holder.generation == 2 and holder.current.stores[0].reply_window.seconds == 90
    assert holder.last_error is not None
    assert "store 1001 (stores[0]): reply_window.seconds" in str(holder.last_error)


def test_an_empty_variable_is_an_error_never_a_fallback_to_the_demo_value() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE, environ={"STORE_1001_APP_SECRET": ""})
    assert [str(p) for p in caught.value.problems] == [
        "error: store 1001 (stores[0]): platform.app_secrets[0]: environment variable STORE_1001_APP_SECRET is set "
        "but empty"
    ]


def test_demo_values_are_named_and_real_values_are_not() -> None:
    demo = load_config(EXAMPLE, environ={}).demo_values
    assert {p.path for p in demo} >= {"slack.bot_token", "telegram.api_base_url", "stores[0].platform.app_secrets[0]"}
    assert "server.port" not in {p.path for p in demo}, "a default port is no demo value"
    names = {p.message.split(" ", 1)[0]: p.path for p in demo}
    real = {name: "https://real.example/api/" if "url" in path else f"real-{name}" for name, path in names.items()}
    assert load_config(EXAMPLE, environ=real).demo_values == []


def test_people_are_matched_through_one_accounts_map_and_the_older_fields_still_load() -> None:
    tree = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    tree["stores"][0]["agents"][0] = {"id": "main-1001", "name": "店长 Li", "slack_user": "U0OLD",
                                      "telegram_user": 42, "accounts": {"lark": "ou_1"}}  # fmt: skip
    store = parse_config(yaml.safe_dump(tree, allow_unicode=True), environ={}).config.stores[0]
    agent = store.agents[0]
    assert agent.accounts == {"slack": "U0OLD", "telegram": "42", "lark": "ou_1"}
    assert (agent.identity("slack"), agent.identity("telegram"), agent.identity("dingtalk")) == ("U0OLD", "42", None)
    assert store.agents[1].accounts == {"slack": "U0AGENTA", "telegram": "1001002"}, "the example's own form"


def test_problems_name_things_as_people_know_them_in_plain_words() -> None:
    tree = yaml.safe_load(EXAMPLE.read_text())
    tree["stores"][0]["platform"]["app_secrets"] = []
    tree["stores"][1]["reply_window"] = {"seconds": "soon"}
    tree["creators"][0]["name"] = ""
    with pytest.raises(ConfigError) as refused:
        parse_config(yaml.safe_dump(tree, allow_unicode=True), environ={})
    lines = str(refused.value).splitlines()[1:]
    assert lines == [
        "  error: store 1001 (stores[0]): platform.app_secrets: at least one secret is needed",
        "  error: store 1002 (stores[1]): reply_window.seconds: must be a whole number",
        "  error: creator c-7001 (creators[0]): name: must not be empty",
    ], "the id first, then the path, in plain words; never pydantic's wording"


def test_a_structural_mistake_does_not_hide_the_checks_across_fields(tmp_path: Path) -> None:
    tree = example_tree()
    tree["stores"][0]["reply_window"]["seconds"] = "abc"  # refused by its type
    tree["stores"][1]["agents"][0]["im_permission"] = False  # caught only by the checks across fields
    bad = tmp_path / "mixed.yaml"
    bad.write_text(yaml.safe_dump(tree, allow_unicode=True))
    lines = run_check(bad).stdout.splitlines()
    assert any("store 1001 (stores[0]): reply_window.seconds: must be a whole number" in line for line in lines)
    assert any("store 1002 (stores[1]): designated_agents: no designated agent has IM permission" in line
               for line in lines), lines  # fmt: skip
    assert lines[-1].endswith("2 error(s), 1 warning(s) — not valid")


def test_every_setting_is_in_the_configuration_reference() -> None:
    """docs/configuration.md names every setting the file takes (by its path below its section, as
    `reply_window.seconds`); a section named there whole (`task_orders.quiet_hours`) counts for the
    settings inside it."""
    reference = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()

    def named(path: list[str]) -> bool:
        return any(f"`{'.'.join(path[i:])}{end}" in reference for i in range(len(path)) for end in ("`", "[]`"))

    def sections(annotation: object) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in sections(arg)]

    def unnamed(model: type[BaseModel], path: list[str]) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            here = [*path, field.alias or name]
            inner = sections(field.annotation)
            if inner and (not path or not named(here)):  # a file's section, or one not named whole
                for section in inner:
                    missing += unnamed(section, here)
            elif not named(here):
                missing.append(".".join(here))
        return missing

    assert unnamed(BridgeConfig, []) == []
