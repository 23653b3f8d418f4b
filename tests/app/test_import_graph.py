"""The house plan, on the import graph itself (not on module names): pure rules, an engine that
knows no flow, a core that names no service, connectors that only translate, and no import circle
anywhere — type-only imports included, as a circle there is still a circle in the design. The
contracts are in pyproject.toml ([tool.importlinter])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bridge", "connectors", "rules")


def test_the_layer_contracts_hold() -> None:
    # Its own process: import-linter configures logging for itself.
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--config", "pyproject.toml"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_no_module_imports_itself_back() -> None:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=False)
    circles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                circles.add(" → ".join((module, *back)))
    assert not circles, "\n".join(sorted(circles))


def test_the_graph_is_the_real_one() -> None:
    """The checks above would pass on an empty graph: they see the wiring the bridge runs on."""
    graph = grimp.build_graph(*PACKAGES)
    assert graph.direct_import_exists(importer="bridge.app.service", imported="connectors.platform.inbound")
    assert graph.direct_import_exists(importer="connectors.slack.app", imported="bridge.flows.views")
    assert graph.find_shortest_chain(importer="bridge.flows.tasks", imported="rules.deadline")
