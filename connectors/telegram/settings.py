"""The ``telegram:`` section of the configuration: one bot for all stores and creators."""

from __future__ import annotations

from pydantic import Field

from bridge.config import SettingsModel


class TelegramSettings(SettingsModel):
    bot_token: str = Field(min_length=1)
    webhook_secret: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]{1,256}$")
    api_base_url: str = Field(default="https://api.telegram.org/bot", pattern=r"^https?://")
    file_base_url: str = Field(default="https://api.telegram.org/file/bot", pattern=r"^https?://")
