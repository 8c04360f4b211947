"""The running dashboard (`churnops dashboard`) driven by a real browser: Debian's chromium and
chromium-driver (scripts/bootstrap.sh installs them) through Selenium. It opens the segments page, applies a
filter like a person would, finds the figures computed here, and saves a screenshot under tests/output/."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.dashboard.conftest import expected, riskier, write_run

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "output"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard_url(make_home, model):
    home = make_home()
    write_run(home, model, model.customers, "night-1", minutes=0)
    write_run(home, model, riskier(model.customers, 300), "night-2", minutes=60)
    port = _free_port()
    log = (home / "dashboard.log").open("w")
    command = [str(Path(sys.executable).parent / "churnops"), "dashboard", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a loaded machine: streamlit takes seconds to import
    try:
        while True:
            try:
                if requests.get(f"{url}/_stcore/health", timeout=2).text.strip() == "ok":
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"the dashboard did not answer: {(home / 'dashboard.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromium-driver are missing: scripts/bootstrap.sh installs them "
                    "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1400"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def _metric(browser, label: str) -> str | None:
    from selenium.webdriver.common.by import By

    for metric in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        try:
            if metric.find_element(By.CSS_SELECTOR, '[data-testid="stMetricLabel"]').text.strip() == label:
                return metric.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text.strip()
        except Exception:  # the page re-rendered under us: read it again on the next poll
            return None
    return None


def test_a_person_filters_the_segments_page_in_a_real_browser_and_sees_the_right_figures(
    dashboard_url: str, model
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    exp = expected(model, riskier(model.customers, 300))
    women = exp[exp.Gender == "F"]
    browser = _browser()
    try:
        wait = WebDriverWait(browser, 120, poll_frequency=0.5)
        browser.get(f"{dashboard_url}/?page=Segments")
        wait.until(lambda b: _metric(b, "Customers") == f"{len(exp):,}")

        gender = next(el for el in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMultiSelect"]')
                      if el.text.startswith("Gender"))
        box = gender.find_element(By.TAG_NAME, "input")
        box.click()
        box.send_keys("F")
        box.send_keys(Keys.ENTER)
        box.send_keys(Keys.ESCAPE)

        wait.until(lambda b: _metric(b, "Customers") == f"{len(women):,}")
        assert _metric(browser, "Expected churners") == f"{women.p.sum():,.0f}"
        assert _metric(browser, "Revenue at risk") == f"{women.loss.sum():,.0f}"
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')) >= 2)
        assert "Traceback" not in browser.page_source
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / "dashboard-segments-filtered.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()
