"""Project wiring: README's set-up commands, CI script, public API."""

from __future__ import annotations

import re
from pathlib import Path

import topiq_loss

ROOT = Path(__file__).parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index("```bash") < 200, "set-up commands must open the README"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2
    ci_lines = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci_lines == [commands[1]]
    assert "pytest" in commands[1] and "pyiqa==0.1.16" in commands[1]


def test_public_api_is_flat_and_sorted():
    assert topiq_loss.__all__ == sorted(topiq_loss.__all__)
    assert len(topiq_loss.__all__) <= 25  # what a user imports; the rest lives in its module
    for name in ("WEIGHTS", "NR_WEIGHTS", "ResNet50Features", "build_nr_network", "TargetFeatures"):
        assert hasattr(topiq_loss, name), name  # 0.3 code keeps working
    for name in topiq_loss.__all__:
        assert getattr(topiq_loss, name) is not None
