"""The composition root: the only code that wires the core to the connectors (serve, CLI, demo)."""
