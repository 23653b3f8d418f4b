"""What every benchmark result records about the run: the commit it measured (and whether the tree
had changes beside it), the cores, and the machine's load when it started (``at_end`` is added by
each benchmark when it finishes)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout)
    return {"commit": commit, "uncommitted_changes": dirty, "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(info: Mapping[str, Any]) -> float:
    """CPU seconds (user + system) a redis-server has used, from its ``INFO cpu``."""
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
