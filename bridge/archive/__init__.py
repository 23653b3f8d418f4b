"""History kept in a real database: finished task orders (and, next, chats) archived by a durable
step of their flow, for lists, exports and statistics over any period. SQLite is the embedded
default (a file under ``var/``, WAL mode); ``ARCHIVE_URL`` points several replicas at one database.
Redis keeps live work only."""
