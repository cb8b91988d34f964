"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against a real gateway, worker, Temporal and PostgreSQL.

Signs in through the page, watches a slow rollout advance, pauses it with the button (the
workflow's own query says paused), resumes it, then opens a 2,000-target run (schemas in one
database) and filters it to its failed targets; a viewer sees no controls, and single sign-on
(authorization code with PKCE against the dev realm) signs in too. Screenshots go to
``test-artifacts/ui/``.
A missing browser fails the test: it is never skipped."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from temporalio.client import Client

from cli.dev_issuer import DevIssuer
from cli.stack import free_port
from common.catalog.databases import DatabaseRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from gateway.app import create_app
from gateway.routers.migrations import FleetHandle
from models.databases import DatabaseCreate
from models.fleet import FleetProgress, FleetStatus
from tests.activities.test_migrations import migration
from tests.conftest import TargetDatabase, TargetFactory, ThreadedServer
from workflows.fleet import MigrateFleetWorkflow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BIG_FLEET = 2_000
# The first 25 schemas (first in the run's order) already have the table it creates: they fail.
CONFLICTING = 25
SLOW_TARGETS = 10
WAIT = 60.0


def browser_binaries() -> tuple[str, str]:
    """Debian's chromium and chromedriver; a clear failure (never a skip) when absent."""
    found = {
        path: Path(path).exists() or shutil.which(path) is not None
        for path in (CHROMIUM, CHROMEDRIVER)
    }
    missing = [path for path, there in found.items() if not there]
    if missing:
        pytest.fail(
            f"the dashboard's browser test needs {', '.join(missing)}: install Debian's "
            "packages with `apt-get install -y --no-install-recommends chromium chromium-driver` "
            "(make test does so when it runs as root)"
        )
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium through chromedriver: no downloads, no Selenium Manager."""
    chromium, chromedriver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    # The console, to prove the page ran without errors (a CSP refusal would land there).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    # The last state of the page, for a failure's post-mortem.
    screenshot(driver, "last.png")
    driver.quit()


@pytest.fixture
def gateway_url(settings: Settings, running_worker: None) -> Iterator[str]:
    """The gateway on a real port, with its lifespan, on the session's services and worker."""
    port = free_port()
    server = ThreadedServer(create_app(settings), port, lifespan="on")
    # Started by hand with a longer wait than ThreadedServer.start: on a busy machine opening
    # the catalog in the lifespan can take more than its ten seconds.
    server.thread.start()
    deadline = time.monotonic() + WAIT
    while not server.server.started:
        assert time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.stop()


class Fleet:
    """Schema targets in one database, registered in the catalog under one label."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, target: TargetDatabase) -> None:
        self.pool = pool
        self.target = target
        self.label = uuid.uuid4().hex[:10]
        self.repository = DatabaseRepository(
            pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
        )

    async def schemas(self, names: list[str], conflicting: list[str]) -> None:
        conn = await self.target.connect()
        try:
            # Names are generated by the test from hex digits and numbers.
            await conn.execute("".join(f'CREATE SCHEMA "{n}";' for n in names))
            await conn.execute("".join(f'CREATE TABLE "{n}".t (id int);' for n in conflicting))
        finally:
            await conn.close()

    async def register(self, names: list[str], group: str) -> None:
        gate = asyncio.Semaphore(8)

        async def one(name: str) -> None:
            body = self.target.create_body(
                name=f"ui-{self.label}-{name}".replace("_", "-"),
                schema=name,
                labels={"ui": self.label, "group": group},
            )
            async with gate:
                await self.repository.create(DatabaseCreate.model_validate(body))

        await asyncio.gather(*(one(n) for n in names))

    async def forget(self) -> None:
        """Takes the test's targets out of the shared catalog (sweeps must not see them)."""
        await self.pool.execute(
            "DELETE FROM databases WHERE labels @> jsonb_build_object('ui', $1::text)", self.label
        )


@pytest.fixture
async def fleet(
    catalog_pool: asyncpg.Pool, settings: Settings, make_target: TargetFactory
) -> AsyncIterator[Fleet]:
    made = Fleet(catalog_pool, settings, await make_target())
    yield made
    await made.forget()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """Wait (generously) for ``condition`` in the page; elements re-rendered under our feet
    are simply looked up again."""
    return WebDriverWait(
        driver, WAIT, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition, message=f"the page never showed {what}")


def number(driver: WebDriver, element_id: str) -> int:
    text = driver.find_element(By.ID, element_id).text.strip()
    return int(text) if text.isdigit() else -1


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


async def until_progress(
    client: Client, run_id: str, condition: Callable[[FleetProgress], bool]
) -> FleetProgress:
    """The run's own ``progress`` query, polled until ``condition`` holds."""
    handle: FleetHandle = client.get_workflow_handle_for(
        MigrateFleetWorkflow.run, f"migrate-fleet-{run_id}"
    )
    state = None
    for _ in range(int(WAIT / 0.1)):
        state = await handle.query(MigrateFleetWorkflow.progress)
        if condition(state):
            return state
        await asyncio.sleep(0.1)
    summary = state.model_copy(update={"targets": {}}) if state else None
    pytest.fail(f"the run never reached the expected state: {summary}")


async def start_run(
    gateway_url: str, token: str, set_name: str, labels: dict[str, str], **options: object
) -> str:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        response = await http.post(
            "/api/v1/migrations",
            json={"set": set_name, "selector": {"labels": labels}, **options},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def sign_in(driver: WebDriver, url: str, username: str, password: str) -> None:
    driver.get(f"{url}/ui/")
    wait_for(driver, lambda d: d.find_element(By.ID, "signin-form"), "the sign-in form")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "signin-submit").click()
    wait_for(driver, lambda d: "operator" in d.find_element(By.ID, "whoami").text, "who I am")


def open_run(driver: WebDriver, url: str, run_id: str) -> None:
    driver.get(f"{url}/ui/#/runs/{run_id}")
    wait_for(driver, lambda d: d.find_element(By.ID, "run-done"), "the run page")


async def test_dashboard_in_a_real_browser(
    browser: webdriver.Chrome,
    gateway_url: str,
    fleet: Fleet,
    catalog_pool: asyncpg.Pool,
    temporal_client: Client,
    dev_issuer: DevIssuer,
) -> None:
    # Run the blocking WebDriver calls off the loop: the session's worker runs on it.
    def page(call: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(call, *args)

    slow = [f"w{i}" for i in range(SLOW_TARGETS)]
    big = [f"s{i:04d}" for i in range(BIG_FLEET)]
    conflicting = big[:CONFLICTING]
    await fleet.schemas(slow + big, conflicting)
    await fleet.register(slow, "slow")
    await fleet.register(big, "big")
    sets = MigrationSetRepository(catalog_pool)
    slow_set, big_set = f"ui-slow-{fleet.label}", f"ui-big-{fleet.label}"
    await sets.register(
        slow_set, [migration("1", "CREATE TABLE w (id int); SELECT pg_sleep(1.5);")]
    )
    await sets.register(big_set, [migration("1", "CREATE TABLE t (id int);")])

    token = dev_issuer.mint(subject="ui-test", roles=["infra-operator"])
    # A rollout slow enough to watch: one target at a time, 1.5 s each.
    run_id = await start_run(
        gateway_url,
        token,
        slow_set,
        {"ui": fleet.label, "group": "slow"},
        concurrency=1,
        batch_size=1,
    )
    await until_progress(temporal_client, run_id, lambda p: p.total_known)
    # Sign in through the page with the dev issuer's operator (password grant via the proxy):
    # the fleet overview follows, with the run among the active ones.
    await page(sign_in, browser, gateway_url, "operator", dev_issuer.user_password("operator"))
    await page(
        wait_for,
        browser,
        lambda d: (
            "/" in d.find_element(By.CSS_SELECTOR, f'[data-run-id="{run_id}"] .run-done').text
        ),
        "the active run's live progress",
    )
    overview = await page(screenshot, browser, "overview.png")

    # The run page: its done count advances while we watch.
    await page(open_run, browser, gateway_url, run_id)
    first = await page(
        wait_for, browser, lambda d: number(d, "run-done") >= 1 or None, "a first target done"
    )
    assert first is True or first
    seen = await page(number, browser, "run-done")
    await page(wait_for, browser, lambda d: number(d, "run-done") > seen, "the progress advancing")

    # Pause with the button: the workflow itself says paused.
    await page(lambda: browser.find_element(By.ID, "btn-pause").click())
    paused = await until_progress(temporal_client, run_id, lambda p: p.status is FleetStatus.PAUSED)
    assert paused.counts.succeeded < SLOW_TARGETS
    await page(
        wait_for,
        browser,
        lambda d: d.find_element(By.ID, "run-status").text.startswith("paused"),
        "the paused status",
    )
    await page(
        wait_for,
        browser,
        lambda d: d.find_element(By.ID, "btn-resume").is_enabled(),
        "the resume button enabled",
    )
    run_paused = await page(screenshot, browser, "run-paused.png")

    # Resume with the button: the run goes on (and finishes while the next part runs).
    await page(lambda: browser.find_element(By.ID, "btn-resume").click())
    resumed = await until_progress(
        temporal_client, run_id, lambda p: p.status is not FleetStatus.PAUSED
    )
    await until_progress(
        temporal_client, run_id, lambda p: p.counts.succeeded > resumed.counts.succeeded
    )

    # A 2,000-target run whose first 25 targets fail: its failure budget (1 %, judged once all
    # 2,000 are resolved) pauses it, which is when an operator opens its run page and filters
    # it to the failed targets.
    big_run = await start_run(
        gateway_url,
        token,
        big_set,
        {"ui": fleet.label, "group": "big"},
        concurrency=8,
        batch_size=25,
        failure_budget={"max_failed_percent": 1.0},
    )
    stopped = await until_progress(
        temporal_client,
        big_run,
        lambda p: p.status is FleetStatus.PAUSED and p.total_known and p.counts.running == 0,
    )
    assert (stopped.total, stopped.counts.failed) == (BIG_FLEET, CONFLICTING)
    await page(open_run, browser, gateway_url, big_run)
    await page(wait_for, browser, lambda d: number(d, "run-total") == BIG_FLEET, "2,000 targets")
    # The unfiltered view is paged: 100 rows and a next page.
    await page(
        wait_for,
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#targets-table tbody tr")) == 100,
        "the first page of targets",
    )
    assert await page(lambda: browser.find_element(By.ID, "next-page").is_enabled())
    await page(
        lambda: Select(browser.find_element(By.ID, "state-filter")).select_by_value("failed")
    )
    rows = await page(
        wait_for,
        browser,
        lambda d: (
            found
            if len(found := d.find_elements(By.CSS_SELECTOR, "#targets-table tbody tr"))
            == len(conflicting)
            else None
        ),
        "the failed targets only",
    )
    texts: list[str] = await page(lambda: [row.text for row in rows])
    expected = {f"ui-{fleet.label}-{name}" for name in conflicting}
    assert {text.splitlines()[0] for text in texts} == expected
    assert all("failed" in text and "already exists" in text for text in texts)
    # Search narrows the current page on the client.
    await page(lambda: browser.find_element(By.ID, "search").send_keys(conflicting[1]))
    await page(
        wait_for,
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#targets-table tbody tr")) == 1,
        "one searched target",
    )
    await page(lambda: browser.find_element(By.ID, "search").clear())
    await page(lambda: browser.execute_script("document.getElementById('search').value = '';"))
    await page(
        lambda: browser.execute_script(
            "document.getElementById('search').dispatchEvent(new Event('input'))"
        )
    )
    failed_shot = await page(screenshot, browser, "run-2000-failed.png")

    # Cancel with the button (after its confirmation): nothing new starts, the run ends.
    await page(lambda: browser.find_element(By.ID, "btn-cancel").click())
    await page(lambda: browser.switch_to.alert.accept())
    cancelled = await until_progress(
        temporal_client, big_run, lambda p: p.status is FleetStatus.CANCELLED
    )
    assert cancelled.counts.failed == CONFLICTING
    assert cancelled.counts.pending == stopped.counts.pending > 0
    await page(
        wait_for,
        browser,
        lambda d: d.find_element(By.ID, "run-status").text.startswith("cancelled"),
        "the cancelled status",
    )
    # A finished run offers no control.
    assert not await page(lambda: browser.find_element(By.ID, "btn-cancel").is_enabled())
    slow_run = await until_progress(
        temporal_client, run_id, lambda p: p.status is FleetStatus.COMPLETED
    )
    assert slow_run.counts.succeeded == SLOW_TARGETS

    # A viewer (signed in by pasting a token) sees the run but no controls.
    await page(lambda: browser.find_element(By.ID, "signout").click())
    await page(wait_for, browser, lambda d: d.find_element(By.ID, "token-input"), "sign-in")
    viewer = dev_issuer.mint(subject="ui-viewer", roles=["infra-viewer"])
    await page(lambda: browser.find_element(By.ID, "token-input").send_keys(viewer))
    await page(lambda: browser.find_element(By.ID, "token-submit").click())
    await page(
        wait_for, browser, lambda d: "(viewer)" in d.find_element(By.ID, "whoami").text, "viewer"
    )
    await page(open_run, browser, gateway_url, big_run)
    await page(
        wait_for, browser, lambda d: "Read-only" in d.find_element(By.ID, "main").text, "read-only"
    )
    assert await page(lambda: browser.find_elements(By.ID, "btn-pause")) == []

    # Single sign-on: the authorization-code flow with PKCE against the (dev) realm.
    await page(lambda: browser.find_element(By.ID, "signout").click())
    await page(wait_for, browser, lambda d: d.find_element(By.ID, "pkce-signin"), "sign-in")
    await page(lambda: browser.find_element(By.ID, "pkce-signin").click())
    await page(wait_for, browser, lambda d: d.find_element(By.ID, "kc-login"), "the realm's login")
    assert (await page(lambda: browser.current_url)).startswith(dev_issuer.issuer_url)
    await page(lambda: browser.find_element(By.ID, "username").send_keys("admin"))
    admin_password = dev_issuer.user_password("admin")
    await page(lambda: browser.find_element(By.ID, "password").send_keys(admin_password))
    await page(lambda: browser.find_element(By.ID, "kc-login").click())
    await page(
        wait_for,
        browser,
        lambda d: d.find_element(By.ID, "whoami").text == "admin (operator)",
        "the realm's user signed in",
    )
    # The code and state are gone from the address bar (and history).
    assert "code=" not in await page(lambda: browser.current_url)
    console = await page(browser.get_log, "browser")
    assert [entry["message"] for entry in console if entry["level"] == "SEVERE"] == []
    for shot in (overview, run_paused, failed_shot):
        assert shot.stat().st_size > 0
