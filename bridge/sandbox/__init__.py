"""Dev and test tools: the platform sandbox and the Slack and Telegram emulators, speaking the
services' real wire formats. Never imported by production code."""
