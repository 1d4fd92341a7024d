"""The README's "Layout" section matches the tree: every path it lists exists, every top-level folder is listed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def layout_paths() -> list[str]:
    """The first word of every line in the code block under ``## Layout``."""
    section = ROOT.joinpath("README.md").read_text().split("\n## Layout\n", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "README's Layout section has no code block"
    return [line.split()[0] for line in block.group(1).splitlines() if line.strip()]


def test_every_listed_path_exists():
    missing = [path for path in layout_paths() if not (ROOT / path).exists()]
    assert not missing, f"README Layout lists paths that do not exist: {missing}"


def test_every_tracked_top_level_folder_is_listed():
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    folders = {line.split("/")[0] for line in done.stdout.splitlines() if "/" in line and not line.startswith(".")}
    listed = {path.rstrip("/").split("/")[0] for path in layout_paths()}
    assert folders <= listed, f"top-level folders missing from README Layout: {sorted(folders - listed)}"
