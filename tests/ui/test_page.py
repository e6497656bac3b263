"""The page in a real headless browser (Debian's chromium through Selenium) against a running
pipeline, on the in-memory bus and on Redis.

The pipeline and the page's server run on an asyncio loop in a thread (on memory they must
share the process); Selenium drives chromium from the test. The page must show the declared
graph, a rate that moves once data flows, a dead letter that can be read and replayed, and
a replica's end: on memory a stopped replica (its last beat says so), on Redis a replica
process killed with SIGKILL, which says nothing and turns silent.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mlops_async import App, Producer
from mlops_async.ui import UIServer, serve_ui

from ..conftest import make_msg
from .uipipe import FIXED, SEEN, make_pipeline

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0


class LoopThread:
    """An event loop on a thread, for the pipeline and the server while the test drives."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ui-test-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.fail("the page tests need Debian's chromium and chromium-driver: "
                    "./scripts/test installs them (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,650", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Running:
    """The pipeline's apps, a feeder and the page's server, on the loop thread."""

    def __init__(self, loop: LoopThread, url: str, name: str) -> None:
        self.loop, self.url, self.name = loop, url, name
        self.pipeline = make_pipeline(name, url, heartbeat=0.3)
        self.apps: dict[str, list[App]] = {}
        self.server: UIServer | None = None
        self.feeding: asyncio.Task[None] | None = None
        self.sent = 0

    async def start(self, parse_replicas: int) -> str:
        for stage, n in (("parse", parse_replicas), ("sink", 1)):
            self.apps[stage] = [self.pipeline.app_for(stage) for _ in range(n)]
            for app in self.apps[stage]:
                await app.start()
        self.server = await serve_ui(self.url, self.pipeline, port=0, interval=0.5)
        return self.server.address

    async def feed(self) -> None:
        async def loop() -> None:
            async with Producer(self.url, topic=f"{self.name}.in") as out:
                while True:
                    await out.send(make_msg(self.sent), flush=True)
                    self.sent += 1
                    await asyncio.sleep(0.02)

        self.feeding = asyncio.create_task(loop())

    async def poison(self) -> None:
        async with Producer(self.url, topic=f"{self.name}.in") as out:
            await out.send(make_msg(-1, poison=True), flush=True)

    async def close(self) -> None:
        if self.feeding is not None:
            self.feeding.cancel()
            await asyncio.gather(self.feeding, return_exceptions=True)
        for apps in self.apps.values():
            for app in apps:
                await app.stop()
        if self.server is not None:
            await self.server.close()


def shots(tmp_path: Path) -> Path:
    """Where screenshots go: UI_SCREENSHOTS (docs/img for the docs), else the test's tmp dir."""
    return Path(os.environ.get("UI_SCREENSHOTS") or tmp_path)


def wait_for(driver: Any, what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(_: Any) -> Any:
        try:
            return check()
        except StaleElementReferenceException:  # the page redraws every update
            return None

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        attempt, message=f"the page never showed {what}")


def click(driver: Any, css: str) -> None:
    """Click ``css``, again if the page redrew it between finding and clicking."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            driver.find_element("css selector", css).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept being redrawn under the click")


def attr(driver: Any, css: str, name: str) -> list[str]:
    """``name`` of every element matching ``css``, read in one go (the page redraws)."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(e => e.getAttribute(arguments[1]))", css, name)
    return found


def text(driver: Any, css: str) -> str:
    found: str = driver.execute_script(
        "return document.querySelector(arguments[0]).textContent", css)
    return found


def replica_states(driver: Any, stage: str) -> list[str]:
    return attr(driver, f'[data-node="s:{stage}"] [data-replica]', "data-state")


def check_graph_rate_and_dead_letters(driver: Any, run: Running, address: str,
                                      replicas: int) -> None:
    n = run.name
    driver.get(address)
    wait_for(driver, "the graph", lambda: len(replica_states(driver, "parse")) == replicas
             and len(replica_states(driver, "sink")) == 1)
    assert set(attr(driver, "[data-node]", "data-node")) == {
        "s:parse", "s:sink", f"q:{n}.in", f"q:{n}.mid"}
    assert set(attr(driver, "[data-edge]", "data-edge")) == {
        f"q:{n}.in->s:parse", "s:parse->q:" + f"{n}.mid", f"q:{n}.mid->s:sink"}

    def rate_in(stage: str) -> float:
        values = attr(driver, f'[data-node="s:{stage}"] .rate-in', "data-value")
        return float(values[0]) if values and values[0] not in ("", "null") else 0.0

    assert rate_in("parse") == 0.0  # nothing sent yet
    run.loop.run(run.feed())
    wait_for(driver, "parse's input rate move", lambda: rate_in("parse") > 0)
    wait_for(driver, "a live edge", lambda: "edge live" in attr(
        driver, f'[data-edge="q:{n}.in->s:parse"]', "class"))

    run.loop.run(run.poison())
    badge = f'[data-dlq="{n}.mid.dlq"]'
    wait_for(driver, "the dead letter's badge", lambda: text(driver, f"{badge} text") == "DLQ 1")
    click(driver, badge)
    wait_for(driver, "the dead letter", lambda: "ValueError: poisoned record -1" in
             driver.find_element("css selector", "#letters").text)
    letter = driver.find_element("css selector", ".letter").text  # the drawer is not redrawn
    assert '"poison": true' in letter and "handler sink" in letter
    wait_for(driver, "one letter waiting", lambda: "1 waiting to replay" in
             driver.find_element("css selector", "#dlq-count").text)
    FIXED[n] = True  # the stage is fixed: the replayed letter goes through
    driver.find_element("css selector", "#replay-all").click()
    wait_for(driver, "the replay", lambda: driver.find_element(
        "css selector", "#replay-result").get_attribute("data-replayed") == "1")
    wait_for(driver, "the replayed record handled", lambda: -1 in SEEN[n])
    wait_for(driver, "no letter waiting", lambda: "0 waiting to replay" in
             driver.find_element("css selector", "#dlq-count").text)
    driver.find_element("css selector", "#dlq-close").click()


def test_the_page_on_memory(browser: Any, tmp_path: Path) -> None:
    loop = LoopThread()
    run = Running(loop, f"memory://ui-{uuid.uuid4().hex[:6]}", f"uim{uuid.uuid4().hex[:6]}")
    try:
        address = loop.run(run.start(parse_replicas=2))
        check_graph_rate_and_dead_letters(browser, run, address, replicas=2)
        loop.run(run.apps["parse"][0].stop())
        wait_for(browser, "a stopped replica", lambda: sorted(
            replica_states(browser, "parse"))[-1] == "stopped")
        assert "stopped" in text(browser, '[data-node="s:parse"]')
        browser.save_screenshot(str(shots(tmp_path) / "ui-stopped.png"))
    finally:
        loop.run(run.close())
        loop.close()


@pytest.mark.redis
def test_the_page_on_redis(browser: Any, redis_url: str, tmp_path: Path) -> None:
    name = f"uir{uuid.uuid4().hex[:6]}"
    # One replica of parse runs in its own process, as in production: it can be killed.
    replica = subprocess.Popen(
        [sys.executable, "-m", "mlops_async", "run", "tests.ui.uipipe:pipeline",
         "--stage", "parse", "--url", redis_url],
        cwd=ROOT, env={**os.environ, "UI_PREFIX": name, "UI_HEARTBEAT": "0.3"})
    loop = LoopThread()
    run = Running(loop, redis_url, name)
    try:
        address = loop.run(run.start(parse_replicas=1))
        check_graph_rate_and_dead_letters(browser, run, address, replicas=2)
        mine = f'[data-node="s:parse"] [data-replica*="-{replica.pid}-"]'
        assert attr(browser, mine, "data-state")[0] in ("running", "idle")
        replica.send_signal(signal.SIGKILL)
        replica.wait(10)
        wait_for(browser, "the killed replica silent",
                 lambda: attr(browser, mine, "data-state") == ["silent"])
        assert attr(browser, '[data-node="s:parse"]', "data-state") == ["silent"]
        assert "1 silent" in text(browser, "#totals")
        browser.save_screenshot(str(shots(tmp_path) / "ui-silent.png"))
    finally:
        if replica.poll() is None:
            replica.kill()
        replica.wait(10)
        loop.run(run.close())
        loop.close()
