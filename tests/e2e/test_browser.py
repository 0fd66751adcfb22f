"""The status page in a real browser: Debian's chromium, headless, driven
through Debian's chromium-driver by Selenium.

A small platform runs under a real daemon: the page lists every service by tier,
shows the deprecated one struck through with its replacement and the port held by
a stranger with that process; a service is killed and its row changes state and
counts the restart without the page being reloaded; the log lines open on
demand; on a phone-sized screen nothing needs horizontal scrolling. The screenshot
goes to the test's folder, and to docs/status-page.png (the README's picture)
when UPDATE_SCREENSHOTS=1.

Skips without chromium/chromedriver/selenium, except under CI (CI=true), where it
fails: CI installs the Debian packages `chromium` and `chromium-driver`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_ports, wait_until
from tests.integration.harness import Platform, port_accepts

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = ROOT / "docs" / "status-page.png"


def missing(what: str) -> None:
    message = f"{what} is not installed (Debian packages `chromium` and `chromium-driver`, pip `selenium`)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must install them")
    pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[Any]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(os.path.basename(path))):
            missing(path)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if os.path.exists(CHROMIUM) else str(shutil.which("chromium"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--hide-scrollbars", "--force-color-profile=srgb", "--lang=en-US"):
        options.add_argument(arg)
    driver_path = CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else str(shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def stranger() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A process that is not ours listening on a free port."""
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import socket,time\ns=socket.socket();s.bind(('127.0.0.1',%d));s.listen();time.sleep(600)" % port],
        start_new_session=True,
    )
    try:
        wait_until(lambda: port_accepts(port), what="the stranger's listener")
        yield port, proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def rows(driver: Any) -> dict[str, dict[str, str]]:
    """Every service row on the page: state, restarts, the row's text and classes."""
    data = driver.execute_script(
        """return Array.from(document.querySelectorAll('tr.svc')).map(tr => ({
             name: tr.dataset.service, state: tr.dataset.state || '', cls: tr.className,
             restarts: tr.querySelector('td.c-restarts').textContent, text: tr.innerText,
             tier: tr.closest('section').id}))"""
    )
    return {row["name"]: row for row in data}


def test_the_page_shows_the_platform_and_follows_a_crash_without_reload(
    platform: Platform, browser: Any, stranger: tuple[int, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    (metrics_port,) = free_ports(1)
    platform.supervisor.update(name="bizosaas-dev", metrics=f"127.0.0.1:{metrics_port}", http_logs=True)
    platform.tiers = {
        "infrastructure": {"order": 0, "description": "Database & infrastructure"},
        "backend": {"order": 1, "description": "Backend services"},
        "frontend": {"order": 2, "description": "Frontend applications"},
    }
    web = "http://127.0.0.1:{port}"
    platform.add("postgres", tier="infrastructure", description="Main database", url="postgres://localhost:{port}")
    platform.add("redis", tier="infrastructure", description="Cache and sessions", url="redis://localhost:{port}")
    platform.add("fastapi-hub", tier="backend", args="--delay 2", ready={"http": "/health"}, url=web,
                 description="Main backend orchestration", depends_on=["postgres", "redis"])
    platform.add("celery-worker", tier="backend", port=None, description="Background jobs", depends_on=["redis"])
    platform.add("admin", tier="frontend", url=web + "/admin", description="Platform administration",
                 depends_on=["fastapi-hub"])
    platform.add("super-admin", tier="frontend", url=web, description="Super Admin Dashboard",
                 status="deprecated", replaced_by="admin")
    stranger_port, stranger_proc = stranger
    long_url = web + "/directory/listings?category=restaurants&city=amsterdam&page=1"
    platform.add("business-directory", tier="frontend", port=stranger_port, url=long_url,
                 description="Business directory listings", depends_on=["fastapi-hub"])
    platform.write()
    result = platform.svc("up", timeout=60)
    assert result.returncode == 1 and f"held by pid {stranger_proc.pid}" in result.stderr, result.stderr
    status = platform.status()

    # the first paint, from the page alone (no event stream, no poll): CPU figures already there
    frozen = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
        "source": "window.EventSource = undefined; window.fetch = () => new Promise(() => {});"})
    browser.get(f"http://127.0.0.1:{metrics_port}/")
    wait_until(lambda: len(rows(browser)) == len(status), timeout=10, what="a row per service")
    cpu = browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('tr.svc')).map("
        "tr => [tr.dataset.service, tr.querySelector('td.c-cpu').textContent]))")
    running = {name for name, s in status.items() if s["pid"]}
    assert running and all(re.fullmatch(r"\d+\.\d%", cpu[name]) for name in running), cpu
    assert all(cpu[name] == "-" for name in set(status) - running), cpu
    browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": frozen["identifier"]})

    browser.get(f"http://127.0.0.1:{metrics_port}/")
    wait_until(lambda: len(rows(browser)) == len(status), timeout=10, what="a row per service")
    shown = rows(browser)
    assert set(shown) == set(status)
    # grouped by tier, in start order
    sections = browser.execute_script("return Array.from(document.querySelectorAll('main section h2')).map(h => h.firstChild.textContent)")
    assert sections == ["Database & infrastructure", "Backend services", "Frontend applications"]
    assert shown["postgres"]["tier"] == "tier-infrastructure" and shown["admin"]["tier"] == "tier-frontend"
    for name, s in status.items():
        assert shown[name]["state"] == s["state"], name
    # clickable URLs of web services
    hub_port = platform.services["fastapi-hub"]["port"]
    links = browser.execute_script("return Array.from(document.querySelectorAll('td.c-url a')).map(a => a.href)")
    assert f"http://127.0.0.1:{hub_port}/" in links
    assert f"http://127.0.0.1:{platform.services['admin']['port']}/admin" in links
    # a URL stays on one line: cut with an ellipsis, the whole of it in the tooltip and the link
    urls = browser.execute_script(
        """return Array.from(document.querySelectorAll('td.c-url .url')).map(u => ({
             service: u.closest('tr').dataset.service, text: u.textContent, title: u.title, href: u.href || '',
             lines: u.getClientRects().length, height: u.getBoundingClientRect().height,
             lineHeight: parseFloat(getComputedStyle(u).lineHeight), cut: u.scrollWidth > u.clientWidth}))""")
    assert len(urls) == len(status)
    for u in urls:
        assert u["lines"] == 1 and u["height"] < 1.5 * u["lineHeight"], u
    directory = next(u for u in urls if u["service"] == "business-directory")
    full = long_url.format(port=stranger_port)
    assert directory["cut"] and directory["text"] == directory["title"] == full and directory["href"] == full, directory
    # deprecated: struck through, with its replacement
    assert "deprecated" in shown["super-admin"]["cls"]
    decoration = browser.execute_script(
        "return getComputedStyle(document.querySelector('#svc-super-admin .name')).textDecorationLine")
    assert decoration == "line-through"
    assert "replaced by admin" in shown["super-admin"]["text"]
    # the port held by a stranger, with that process
    assert shown["business-directory"]["state"] == "conflict"
    assert f"pid {stranger_proc.pid}, not ours" in shown["business-directory"]["text"]
    note = browser.execute_script("return document.querySelector('#note-business-directory').innerText")
    assert f"held by pid {stranger_proc.pid}" in note and "time.sleep(600)" in note

    # a crash shows up on the page as it happens: no reload
    browser.execute_script("window.__sameDocument = 'yes'")
    hub_pid = status["fastapi-hub"]["pid"]
    os.kill(hub_pid, signal.SIGKILL)
    wait_until(lambda: rows(browser)["fastapi-hub"]["state"] in ("backoff", "waiting", "starting"), timeout=10,
               interval=0.05, what="fastapi-hub's row to leave ready")
    badge_colour = browser.execute_script(
        "return getComputedStyle(document.querySelector('#svc-fastapi-hub .badge')).color")
    ready_colour = browser.execute_script("return getComputedStyle(document.querySelector('#svc-postgres .badge')).color")
    assert badge_colour != ready_colour  # the state's colour changed with it
    wait_until(lambda: rows(browser)["fastapi-hub"]["state"] == "ready", timeout=20, what="fastapi-hub ready again")
    wait_until(lambda: rows(browser)["fastapi-hub"]["restarts"] == "1", timeout=5, what="the restart counted")
    assert browser.execute_script("return window.__sameDocument") == "yes"
    assert "live" in browser.find_element("id", "conn").text

    # log lines on demand
    browser.execute_script("document.querySelector('#svc-fastapi-hub button.logs').click()")
    wait_until(lambda: "listening on" in browser.execute_script(
        "return document.querySelector('#logs-fastapi-hub pre').textContent"), timeout=10,
        what="fastapi-hub's log lines")
    assert browser.get_log("browser") == []  # no script error, no CSP violation

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, height + 140)  # the window's frame is not part of the page
    shot = tmp_path / "status-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    # a phone-sized screen: every service still there, nothing wider than the screen
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    wait_until(lambda: browser.execute_script("return window.innerWidth") == 390, timeout=5, what="the phone viewport")
    widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    assert len(rows(browser)) == len(status)
    head = browser.execute_script("return getComputedStyle(document.querySelector('thead')).display")
    assert head == "none"  # cards, not a table, on a phone
