"""One package per outside system. ``platform`` is the Douyin side; every other package that
exposes ``DESTINATION`` is a chat tool the flows can use (see ``bridge/destinations.py``)."""
