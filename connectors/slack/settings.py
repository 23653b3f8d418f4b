"""The ``slack:`` section of the configuration: one Slack app for all stores and creators."""

from __future__ import annotations

from pydantic import Field, model_validator

from bridge.config import SettingsModel


class SlackSettings(SettingsModel):
    bot_token: str = Field(min_length=1)
    signing_secret: str = Field(min_length=1)
    api_base_url: str = Field(default="https://slack.com/api/", pattern=r"^https?://.*/$")
    socket_mode: bool = False
    app_token: str | None = None

    @model_validator(mode="after")
    def _socket_mode_needs_app_token(self) -> SlackSettings:
        if self.socket_mode and not self.app_token:
            raise ValueError("socket_mode needs app_token (an xapp- token with connections:write)")
        return self
