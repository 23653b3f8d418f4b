"""What every benchmark result records about the run: the commit it measured (and whether the tree
had changes beside it), the cores, and the machine's load and CPU pressure when it started and when
it finished (``at_end``), with the share of the run during which some task waited for a core."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout)
    return {"commit": commit, "uncommitted_changes": dirty, "cpus": os.cpu_count(), "started_at": round(time.time()),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "cpu_pressure_at_start": cpu_pressure()}  # fmt: skip


@contextlib.contextmanager
def checkout_beside(commit: str, parent: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """``commit``'s code in a detached git worktree under ``parent``, removed afterwards, to run
    beside this checkout's (``--against``); yields its path and both commits' names."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    base = parent / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base), commit], cwd=ROOT, check=True)
    try:
        yield base, {"base": commit, "head": head.stdout.strip()}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)


def at_end(start: Mapping[str, Any]) -> dict[str, Any]:
    """What a benchmark adds to its ``machine()`` record when it finishes: the load and CPU pressure
    then, and the share of the run's time during which some runnable task waited for a core (from
    the kernel's running total; None where it does not report pressure)."""
    end, before = cpu_pressure(), start.get("cpu_pressure_at_start")
    waited = None
    if end is not None and before is not None:
        seconds = max(1.0, time.time() - start["started_at"])
        waited = round((end["some_total_us"] - before["some_total_us"]) / 1e6 / seconds, 3)
    return {"load_average_at_end": [round(x, 2) for x in os.getloadavg()], "cpu_pressure_at_end": end,
            "cpu_waiting_share_of_run": waited}  # fmt: skip


def cpu_pressure() -> dict[str, float] | None:
    """The kernel's CPU pressure (PSI, /proc/pressure/cpu): the % of time some runnable task waited
    for a core over the last 10 and 60 s, and the running total of that waiting (µs); None where the
    kernel does not report it."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    fields = dict(field.split("=", 1) for field in some)
    return {"some_avg10_pct": float(fields["avg10"]), "some_avg60_pct": float(fields["avg60"]),
            "some_total_us": int(fields["total"])}  # fmt: skip


def resident_mb(pid: int) -> float:
    """A process's resident memory (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used: the sum of its threads' time on a CPU, in nanoseconds
    (/proc/<pid>/task/*/schedstat). /proc/<pid>/stat counts in clock ticks (10 ms here): over a 5 s
    idle measurement that is 2 ms/s either way, which over a 90 s run moved a chat's CPU "less idle"
    by 0.4 ms. A thread that ended takes its time with it; the bridge's threads (the archive's, the
    executor's) live as long as it does."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread ending meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def redis_cpu(info: Mapping[str, Any]) -> float:
    """CPU seconds (user + system) a redis-server has used, from its ``INFO cpu``."""
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def wait_up(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    """Until the server on ``port`` (a bridge, or bench/bare_server.py) answers its health check. A
    port that merely accepts a connection is not enough: free_port() only probes, and another
    server (a Redis node started meanwhile) may have taken it while ours failed to bind and exited
    (one bench-chats scaling row pushed 400 chats into a Redis that way and counted them all
    missing). Raises at once when ``process`` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server for port {port} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if json.load(resp).get("status") == "alive":
                    return
        except (OSError, ValueError):  # refused, not HTTP, not ours (urllib's errors are OSErrors)
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no server of ours answered on port {port}")
