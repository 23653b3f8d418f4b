"""``bridge check --online`` for Telegram: the token works, the bot is in every chat the
configuration names, and in groups it has the rights the flows need."""

from __future__ import annotations

from telegram import Bot, ChatMemberAdministrator
from telegram.error import ChatMigrated, TelegramError

from bridge.config import BridgeConfig, Problem
from connectors.telegram.settings import TelegramSettings


async def probe(settings: TelegramSettings, config: BridgeConfig) -> list[Problem]:
    bot = Bot(settings.bot_token, base_url=settings.api_base_url, base_file_url=settings.file_base_url)
    try:
        return await _probe(bot, config)
    except TelegramError as exc:
        return [Problem("telegram.bot_token", f"Telegram refused the token or is not reachable: {exc}")]
    finally:
        await bot.shutdown()


async def _probe(bot: Bot, config: BridgeConfig) -> list[Problem]:
    await bot.initialize()  # getMe: the token
    problems = []
    for path, target in dict.fromkeys(config.targets("telegram")):
        try:
            chat = await bot.get_chat(int(target))
            member = await bot.get_chat_member(int(target), bot.id) if int(target) < 0 else None
        except ChatMigrated as exc:
            problems.append(Problem(path, f"chat {target} is now the supergroup {exc.new_chat_id} (Telegram gives a "
                                    "group a new id when topics are turned on, or it gets a public link or many "
                                    f"members): write telegram:{exc.new_chat_id} here; until then the bridge "
                                    "follows the group to its new id", "warning"))  # fmt: skip
            continue
        except (TelegramError, ValueError) as exc:
            # A bot may write to a person only after they opened it and tapped Start.
            hint = "has the bot been added, is the id right?" if target.startswith("-") else (
                "has that person opened the bot and tapped Start? Its answer shows the id")  # fmt: skip
            problems.append(Problem(path, f"chat {target}: {exc} ({hint})"))
            continue
        if member is None:
            continue
        admin = member if isinstance(member, ChatMemberAdministrator) else None
        name = chat.title or target
        if chat.is_forum and not (admin and admin.can_manage_topics):
            why = "make the bot an admin with Manage topics, so each chat and task order gets its own topic"
            problems.append(Problem(path, f"{name} has topics: {why}"))
        elif admin is None:
            why = (
                "with privacy mode on it sees only commands and replies to its own messages: an answer "
                "written as a reply to a colleague's message in a chat's chain would not reach it"
            )
            problems.append(Problem(path, f"the bot is not an admin of {name}: {why}", "warning"))
    return problems
