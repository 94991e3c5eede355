"""The README tells a new user the truth: its two quick-start commands are the ones that work
(the test command is CI's), the demo's other port is there, every command `sockgate --help`
lists is in its table, and its links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from sockgate.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def quick_start() -> str:
    return README.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def test_it_stays_short() -> None:
    assert len(README.splitlines()) <= 200


def test_the_quick_start_commands_are_the_demo_and_cis_test_command() -> None:
    blocks = re.findall(r"```\n(.*?)\n```", quick_start(), re.S)
    assert "pip install . && sockgate demo" in blocks
    assert "sockgate demo --listen 127.0.0.1:9090" in blocks
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = [b for b in blocks if "scripts/check" in b]
    assert len(test_command) == 1
    assert ci[-1] == test_command[0]  # CI runs the README's test command, as it stands


def test_every_command_is_in_the_table() -> None:
    listed = set(main.commands)
    assert {"demo", "logs", "check", "run", "status", "stop", "reload"} <= listed
    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in listed if f"| `sockgate {name}" not in table]
    assert missing == []


def test_the_help_points_to_the_docs() -> None:
    shown = CliRunner().invoke(main, ["--help"]).output
    found = re.search(r"^  Docs: (\S+) \(config\.md has every key", shown, re.M)
    assert found is not None, shown
    assert (Path(found[1]) / "config.md").is_file()


def test_the_links_lead_to_files() -> None:
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)", README):
        assert (ROOT / target).is_file(), target
