"""After ``pip install``, pytest finds the plugin and its fixtures work outside the repository.

A fresh virtualenv in a temporary directory gets the project installed from the
worktree (a real wheel build, ``--no-deps``); its dependencies are those the
suite's own environment already holds, seen through a directory of links that
leaves out this checkout's editable install, so nothing is downloaded and the
only mlops_async the user's tests can import is the one pip just installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FIXTURES = ROOT / "docs_src" / "testing" / "test_fixtures.py"  # the docs' example

INSTALLED = '''
import mlops_async


def test_the_installed_package_is_the_one_under_test(pytestconfig):
    assert "{venv}" in mlops_async.__file__, mlops_async.__file__
    assert pytestconfig.pluginmanager.hasplugin("mlops_async")
'''


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_plugin_fixtures_work_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    # The suite's dependencies, without this checkout's own (editable) mlops_async.
    deps = tmp_path / "deps"
    deps.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if "mlops_async" not in entry.name and not entry.name.endswith(".pth"):
            (deps / entry.name).symlink_to(entry)
    Path(purelib, "suite-deps.pth").write_text(f"{deps}\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--disable-pip-version-check", str(ROOT)],
        check=True, timeout=300)
    work = tmp_path / "user"
    work.mkdir()
    (work / "test_installed.py").write_text(INSTALLED.replace("{venv}", str(venv)))
    (work / "test_fixtures.py").write_text(FIXTURES.read_text())
    (work / "pytest.ini").write_text(textwrap.dedent("""\
        [pytest]
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "REDIS_URL", "KAFKA_BOOTSTRAP", "VIRTUAL_ENV")}
    env["MLOPS_BUS_PROBE"] = "0"
    done = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout, done.stdout[-2000:]
