"""Flow 2 with the creator's team in Slack (creator c-7002): the confirmation, comments as thread
replies both ways, the log, /tasks, and the result with Contact buyer, all in their channel."""

from __future__ import annotations

from bridge.engine import keys
from tests.conftest import Stack

CREATOR_CHANNEL, CREATOR_USER = "C0CREATOR7002", "U0C7002"
TASKS, MAIN = "C0TASKS1001", "U0MAIN1001"
TAG = "{store:1001}"


async def raise_task(stack: Stack) -> str:
    tid = await stack.sandbox.create_task_order("1001", "c-7002")
    await stack.settle()
    return tid


async def test_the_creator_gets_the_confirmation_in_slack(stack: Stack) -> None:
    tid = await raise_task(stack)
    [confirmation] = stack.slack.channel(CREATOR_CHANNEL)
    assert tid in confirmation.text and "due" in confirmation.text and "<!date^" in confirmation.text
    actions = confirmation.blocks[-1]["elements"]
    assert [b["text"]["text"] for b in actions] == ["Share link", "Log"]
    assert stack.telegram.by_bot(7001) == [], "the other creator is not told"


async def test_comments_go_both_ways_through_slack_threads(stack: Stack) -> None:
    tid = await raise_task(stack)
    confirmation = stack.slack.channel(CREATOR_CHANNEL)[0]
    await stack.slack.user_message(CREATOR_USER, CREATOR_CHANNEL, "The buyer is waiting", thread_ts=confirmation.ts)
    await stack.settle()
    [comment] = stack.sandbox.task_orders[tid].comments
    assert (comment["side"], comment["author_id"], comment["text"]) == ("creator", "c-7002", "The buyer is waiting")
    card = stack.slack.channel(TASKS)[-1]
    assert stack.slack.thread(TASKS, card.ts)[-1].text == "💬 达人留言（达人 阿杰 Ajie）：The buyer is waiting"
    await stack.slack.user_message(MAIN, TASKS, "已安排补发", thread_ts=card.ts)
    await stack.settle()
    assert (
        stack.slack.thread(CREATOR_CHANNEL, confirmation.ts)[-1].text
        == "💬 Comment from the merchant (店长 Li): 已安排补发"
    )
    assert await stack.redis.hget(keys.task(TAG, tid), "comments:creator") == "1"


async def test_the_log_button_and_tasks_command_in_the_creators_channel(stack: Stack) -> None:
    tid = await raise_task(stack)
    confirmation = stack.slack.channel(CREATOR_CHANNEL)[0]
    assert await stack.slack.block_action(CREATOR_USER, CREATOR_CHANNEL, confirmation.ts, "task_log", tid) == 200
    await stack.settle()
    log = stack.slack.ephemerals[-1]
    assert log["channel"] == CREATOR_CHANNEL and log["text"].startswith(f"📋 Task order {tid} log")
    answer = await stack.slash_command(CREATOR_USER, CREATOR_CHANNEL, "/tasks")
    assert answer.startswith("Task orders (⏳ Pending): 1") and tid in answer


async def test_a_processed_task_order_pings_the_creator_with_contact_buyer(stack: Stack) -> None:
    tid = await raise_task(stack)
    await stack.sandbox.process_on_platform(tid, "resolved", "Reshipped, SF123456789")
    await stack.settle()
    result = stack.slack.channel(CREATOR_CHANNEL)[0]
    ping = stack.slack.thread(CREATOR_CHANNEL, result.ts)[-1]
    assert "Reshipped, SF123456789" in ping.text and "has not been told" in ping.text
    assert ping.blocks[-1]["elements"][0]["text"]["text"] == "Contact buyer"
    await stack.slack.user_message(CREATOR_USER, CREATOR_CHANNEL, "thanks", thread_ts=result.ts)
    await stack.settle()
    assert "no more comments" in stack.slack.ephemerals[-1]["text"]


async def test_a_message_outside_a_task_orders_thread_is_told_it_is_no_comment(stack: Stack) -> None:
    tid = await raise_task(stack)
    await stack.slack.user_message(CREATOR_USER, CREATOR_CHANNEL, "Any news on the parcel?")
    await stack.slack.user_message(MAIN, TASKS, "谁来跟一下这个任务单？")
    await stack.settle()
    creator, merchant = stack.slack.ephemerals[-2:]
    assert (creator["channel"], creator["user"]) == (CREATOR_CHANNEL, CREATOR_USER)
    assert creator["text"].startswith("Comment not sent: this message is not in a task order's thread.")
    assert (merchant["channel"], merchant["user"]) == (TASKS, MAIN)
    assert merchant["text"].startswith("留言未发送：这条消息不在任何任务单的消息串里")
    assert stack.sandbox.task_orders[tid].comments == []


async def test_feige_help_says_what_the_bridge_does_in_the_channel(stack: Stack) -> None:
    creator = await stack.slash_command(CREATOR_USER, CREATOR_CHANNEL, "/feige", "help")
    assert creator.startswith("Feige bridge · 达人 阿杰 Ajie") and "/tasks [status] [page]" in creator
    assert "/feige help: this help" in creator and "/feige stats" not in creator
    tasks = await stack.slash_command(MAIN, TASKS, "/feige")
    assert tasks.startswith("飞鸽桥 · 示例旗舰店 Demo Flagship Store")
    assert "/feige stats [today|7d|30d]：响应统计" in tasks
    unknown = await stack.slash_command("U0SOMEONE", "C0ELSEWHERE", "/feige", "help")
    assert "Give slack:C0ELSEWHERE to the bridge's operator" in unknown
    for command, text in (("/feige", "stats"), ("/tasks", "")):
        answer = await stack.slash_command("U0SOMEONE", "C0ELSEWHERE", command, text)
        assert unknown.startswith(answer) and "slack:C0ELSEWHERE" in answer, "the same, with the id"
    assert "Your slack account id: U0SOMEONE" in unknown, "help adds the account's, for an agent's config"
