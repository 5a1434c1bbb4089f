"""axe-core (vendored under tests/assets) for the dashboard's browser tests; the browser itself
comes from tests/browser.py and the server from tests/live.py."""

from __future__ import annotations

import json
from pathlib import Path

AXE = Path(__file__).resolve().parents[1] / "assets" / "axe.min.js"


def axe_violations(page, impacts=("serious", "critical")) -> list[dict]:
    """axe-core run in the page; the violations of the given impacts, summarised."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => JSON.stringify(await axe.run(document, {resultTypes: ['violations']}))")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in json.loads(result)["violations"] if v["impact"] in impacts
    ]
