"""The documentation site builds in strict mode, offline, and the README's code runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ._load import DOCS_SRC, ROOT

# The build runs with every socket refused: the site must build without the network.
OFFLINE_MKDOCS = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("the site build tried to use the network")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from mkdocs.__main__ import cli
sys.argv[0] = "mkdocs"
cli()
"""


def test_site_builds_strict_and_offline(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_MKDOCS, "build", "--strict", "--site-dir",
         str(tmp_path / "site"), "--config-file", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-5000:]
    site = tmp_path / "site"
    tour = (site / "getting-started" / "index.html").read_text()
    assert "etl-worker-1" in tour                           # a snippet was included
    api = (site / "reference" / "clients" / "index.html").read_text()
    assert "send_many" in api                               # docstrings were rendered
    assert ":class:" not in api                             # Sphinx roles are dropped
    assert (site / "wire-format.schema.json").is_file()
    assert (site / "benchmark-results" / "peers.png").is_file()


def test_every_included_section_exists() -> None:
    """A snippet names a file and a section; the build checks files, this the sections."""
    for page in (ROOT / "docs").rglob("*.md"):
        for path, section in re.findall(r'^--8<-- "([^":]+):([^"]+)"$', page.read_text(), re.M):
            source = next(p for p in (ROOT / path, DOCS_SRC / path) if p.exists()).read_text()
            assert f"--8<-- [start:{section}]" in source, (page.name, path, section)
            assert f"--8<-- [end:{section}]" in source, (page.name, path, section)


README = (ROOT / "README.md").read_text()


def test_readme_python_blocks_are_run_examples() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README shows a Python example"
    sources = {p.read_text().strip() for p in DOCS_SRC.rglob("*.py")}
    for block in blocks:
        # Identical to a docs_src file (tests/docs runs each one), else run it here.
        if block.strip() in sources:
            continue
        proc = subprocess.run([sys.executable, "-c", block], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, f"README block failed:\n{block}\n{proc.stderr}"


def test_readme_is_a_short_landing_page_linking_to_the_site() -> None:
    assert len(README.splitlines()) < 150
    assert "./scripts/demo" in README and "./scripts/test" in README
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).exists(), link
