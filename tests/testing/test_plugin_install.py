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

USER_TEST = '''
import mlops_async
from mlops_async import Consumer, Producer


def test_the_installed_package_is_the_one_under_test(pytestconfig):
    assert "{venv}" in mlops_async.__file__, mlops_async.__file__
    assert pytestconfig.pluginmanager.hasplugin("mlops_async")


async def roundtrip(url):
    async with Producer(url, topic="t") as p, Consumer(
            url, topic="t", group="g", auto_offset_reset="earliest") as c:
        await p.send(mlops_async.MessageBuilder().with_msg_type(mlops_async.MessageType.DATA)
                     .with_user_msg("hi").build(), flush=True)
        msgs = []
        for _ in range(100):
            msgs += await c.get_messages(timeout=0.5)
            if msgs:
                break
        assert [m.user_message for m in msgs] == ["hi"]


async def test_memory_bus(memory_bus):
    assert memory_bus.startswith("memory://test-")
    await roundtrip(memory_bus)


async def test_redis_server(redis_server):
    assert redis_server.startswith("redis://127.0.0.1:")
    await roundtrip(redis_server)


async def test_kafka_broker(kafka_broker):
    assert kafka_broker.startswith("kafka://127.0.0.1:")
    await roundtrip(kafka_broker)
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
    (work / "test_user.py").write_text(USER_TEST.replace("{venv}", str(venv)))
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
