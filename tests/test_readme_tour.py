"""The README's tour runs as written (offline: the two registry loads give seeded test networks)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import topiq_loss.weights.builder as networks_mod

ROOT = Path(__file__).parents[1]


def _tour(path: Path) -> str:
    text = path.read_text()
    start = text.index("## A short tour")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block, f"no python block under 'A short tour' in {path.name}"
    return block.group(1)


def test_the_tour_is_the_same_on_github_and_on_the_site():
    assert _tour(ROOT / "README.md") == _tour(ROOT / "docs" / "index.md")


def test_the_readme_tour_runs_as_written(monkeypatch, net):
    from seeded_weights import seeded_state_dict

    from topiq_loss import CFANetNR

    nr = CFANetNR()
    nr.load_state_dict(seeded_state_dict(nr.state_dict(), seed=7), strict=True)
    names = []

    def fake_resolve(weights, cache_dir=None, progress=True, registry=None):
        names.append(weights)
        shared = net if "kadid" in registry else nr  # built once: loading its own values leaves it as it was
        entry = dataclasses.replace(registry[str(weights)], build=lambda: shared)
        return shared.state_dict(), f"the test's {weights} weights", entry

    monkeypatch.setattr(networks_mod, "resolve_weights", fake_resolve)  # every TOPIQ network
    namespace: dict[str, object] = {}
    exec(compile(_tour(ROOT / "README.md"), "README.md tour", "exec"), namespace)  # noqa: S102
    assert namespace["sr"].grad is not None  # type: ignore[attr-defined]
    assert names.count("kadid") >= 3 and "koniq" in names
