"""Outbox job kinds: what the flows ask to be done outside the bridge. Each kind has one sender
(registered by the connector that speaks to that service) and one owner among the flows, which is
told when a job of its kind fails for good."""

from __future__ import annotations

# To the platform (its connector's senders):
SEND_MESSAGE = "platform.send_message"
SEND_IMAGE = "platform.send_image"
IMAGE_REFUSED = "image_refused"
"""The code of a SEND_IMAGE failure for a file the platform does not take as an image (A8, B7's image
limits): its author is told so in their language."""
ADD_COMMENT = "platform.add_comment"
PROCESS_TASK_ORDER = "platform.process_with_evidence"
"""Uploads the evidence, then processes the task order (B7, B8)."""

# Inside the bridge (a flow's own follow-up, run once the job before it succeeded):
FINISH_TASK_ORDER = "bridge.task_finish"
COMMENT_ACCEPTED = "bridge.comment_accepted"
"""After the platform took a comment: it is logged and shown to the other side (B5)."""

# To a destination, ``<service>.<action>`` (every destination connector sends these):
POST = "post"
"""A view in a thread: its root (the first) or a message under it."""
UPDATE_ROOT = "update_root"
"""The thread's root shows the latest state (a chat's status, a task order's card)."""
EPHEMERAL = "ephemeral"
"""A word only one person sees (where the destination can; elsewhere a reply to them)."""
REACT = "react"
"""A mark on what someone wrote (✅ once their reply reached the platform)."""
UPDATE_POST = "update_post"
"""A message posted earlier under a thread (one whose post asked to be remembered) shows a new view:
a step's question with its buttons retired once the step is past."""
DESTINATION_ACTIONS = (POST, UPDATE_ROOT, EPHEMERAL, REACT, UPDATE_POST)


def destination(service: str, action: str) -> str:
    """The job kind of ``action`` for the destination ``service`` (``slack.post``)."""
    return f"{service}.{action}"
