"""A real browser through the Procfile's gunicorn (2 workers, loopback) serving a folder of
two atlases: links name the atlas, the picker switches it, callbacks spread over both
workers serve the page's atlas, an unknown atlas gets a friendly page, and an unwritable
cache directory only costs a warning."""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from dashboard.config import DEMO_ATLAS_DIR
from tests.deploy.serve import Server, gunicorn

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="needs chromedriver"),
]


#: Generous waits: the shared test machine may be heavily loaded.
SLOW = 90.0


def wait_until(condition: Any, timeout: float = SLOW, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # stale elements while the page re-renders
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or "condition not met in time")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def two_atlases(tmp_path_factory: pytest.TempPathFactory, small_atlas: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("deployment")
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "digits").symlink_to(DEMO_ATLAS_DIR, target_is_directory=True)
    (atlases / "small").symlink_to(small_atlas, target_is_directory=True)
    blocker = root / "not-a-directory"
    blocker.write_text("the cache directory cannot be created below a file")
    env = {
        "HOST": "127.0.0.1",
        "NETWORK_ATLAS_DIR": str(atlases),
        "NETWORK_ATLAS_CACHE_DIR": str(blocker / "cache"),
    }
    with gunicorn(env, workers=2) as server:
        yield server


def query(browser: Any) -> dict[str, str]:
    parsed = parse_qs(urlparse(browser.driver.current_url).query)
    return {key: values[0] for key, values in parsed.items()}


def class_shown(browser: Any) -> str:
    return str(browser.find_element("#graph-header .class-name").text)


def test_links_picker_and_callbacks_through_two_workers(dash_br: Any, two_atlases: Server) -> None:
    browser = dash_br
    browser.driver.set_window_size(1440, 1200)
    browser.server_url = two_atlases.url + "/?atlas=small@1&class=2"
    browser.wait_for_element("#graph-header .class-name", timeout=SLOW)
    wait_until(lambda: class_shown(browser) == "class 002", message="link's class not shown")
    assert "Test atlas" in browser.find_element(".app-header .title").text
    assert "small" in browser.find_element(".app-footer code").text
    # Clicking sidebar rows runs callbacks on both workers: each must serve small@1.
    for row in (3, 4, 1):
        rows = browser.find_elements("#sidebar-rows .class-row")
        assert len(rows) == 6, "the sidebar lists small@1's six classes"
        target = rows[row].find_element("css selector", ".row-name").text
        rows[row].click()
        wait_until(lambda t=target: class_shown(browser) == t, message=f"{target} not shown")
        wait_until(lambda t=target: query(browser).get("class") == t.split()[-1].lstrip("0"))
        assert query(browser)["atlas"] == "small@1", "the URL keeps the atlas"
    # The picker opens the other atlas (a full page load of its link).
    browser.select_dcc_dropdown("#atlas-picker", index=0)
    wait_until(lambda: query(browser).get("atlas") == "digits@1", message="picker did not switch")
    wait_until(lambda: "digits" in browser.find_element(".app-header .title").text.lower())
    browser.wait_for_element("#graph-header .class-name", timeout=SLOW)
    rows = wait_until(lambda: browser.find_elements("#sidebar-rows .class-row"))
    assert len(rows) >= 10, "the sidebar lists the digits atlas's classes"
    # A copied link reproduces the view in a fresh page.
    browser.driver.get(two_atlases.url + "/?v=1&atlas=digits@1&class=7")
    wait_until(lambda: class_shown(browser) == "seven", message="digits link not reproduced")
    assert browser.get_logs() == []


def test_unknown_atlas_link_is_a_friendly_page(dash_br: Any, two_atlases: Server) -> None:
    browser = dash_br
    browser.server_url = two_atlases.url + "/?atlas=imagenet@1&class=3"
    heading = browser.wait_for_element("#_pages_content h2", timeout=SLOW)
    assert heading.text == "Atlas not found"
    links = [a.get_attribute("href") for a in browser.find_elements("#_pages_content li a")]
    assert any(link.endswith("?atlas=digits@1") for link in links)
    assert any(link.endswith("?atlas=small@1") for link in links)
    assert "Traceback" not in browser.driver.page_source
    assert browser.get_logs() == []


def test_unwritable_cache_warns_once_per_worker(two_atlases: Server) -> None:
    # The browser tests above made both workers compute cached results (similarity).
    output = two_atlases.output()
    warnings = output.count("running without cache")
    assert 1 <= warnings <= 2, output[-3000:]
    # No error in our code (a browser leaving a page mid-download may log a broken pipe).
    ours = [line for line in output.splitlines() if line.strip().startswith("File ")]
    assert not [line for line in ours if "/dashboard/" in line], output[-6000:]


def test_a_link_reproduces_its_view_after_basic_auth(
    dash_br: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {
        "HOST": "127.0.0.1",
        "NETWORK_ATLAS_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
        "NETWORK_ATLAS_AUTH": "ann:s3cret",
    }
    with gunicorn(env, workers=2) as server:
        browser = dash_br
        link = server.url + "/?v=1&class=7&sort=acc-asc"
        # Without credentials the page is a 401 challenge (tests/deploy/test_procfile.py).
        # After the login prompt a browser sends the credentials with every request of the
        # origin; headless Chromium cannot show the prompt, so DevTools adds the header.
        token = base64.b64encode(b"ann:s3cret").decode()
        browser.driver.execute_cdp_cmd("Network.enable", {})
        browser.driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        browser.driver.get(link)
        wait_until(lambda: class_shown(browser) == "seven", message="linked class not shown")
        assert query(browser)["sort"] == "acc-asc"
        rows = wait_until(lambda: browser.find_elements("#sidebar-rows .class-row"))
        rows[2].click()  # a callback after login
        wait_until(lambda: query(browser).get("class") != "7", message="callback refused")
        assert browser.get_logs() == []
