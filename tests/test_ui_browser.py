"""The Dagster UI in a real browser: start the webserver on the project's code location, drive
headless Chromium (Debian `chromium` + `chromium-driver`, through Selenium) over the asset graph,
materialize a small asset from its page and wait until the run succeeds. Screenshots go to the
test's temp folder; with GEOCONCEPT_UPDATE_SCREENSHOTS=1 the asset graph also goes to
docs/img/dagster-ui.png (the README shows it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from geoconcept import atomic

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"needs Debian chromium + chromium-driver, missing {', '.join(MISSING)} "
        "(`apt-get install chromium chromium-driver`; .ci/run installs them)",
    ),
]

GROUPS = {"ingest", "concepts", "features", "training", "evaluation"}  # the groups issue 6 names
SMALL_ASSET = "concept_bank"  # cheap, needs no upstream data
DOCS_SCREENSHOT = REPO / "docs" / "img" / "dagster-ui.png"
SERVER_START_S = 90
RUN_DONE_S = 120
UI_WAIT_S = 30

# Class names of the pinned dagster-webserver's UI (CSS modules keep the readable prefix).
GRAPH_NODE_LABEL = "//*[contains(@class, 'AssetNode_assetName')]"
GRAPH_VIEWPORT = "[data-svg-viewport] > div"
GRAPH_SIDE_BAR = "//input[contains(@placeholder, 'Jump to')]"
MAX_ZOOM_STEPS = 12  # each step is -0.05 of scale
MAX_PAN_STEPS = 6
GRAPH_MARGIN_PX = 16
# Where the drawn graph (group boxes and asset nodes) sits in the canvas below the floating toolbar
# (arguments[0]: its bottom edge): the shift that would centre it, and whether it fits.
GRAPH_PLACEMENT_JS = """
const view = document.querySelector('[data-svg-viewport]').getBoundingClientRect();
const top = Math.max(view.top, arguments[0]), margin = arguments[1];
const boxes = [...document.querySelectorAll('[data-svg-viewport] foreignObject')].map(e => e.getBoundingClientRect());
const left = Math.min(...boxes.map(b => b.left)), right = Math.max(...boxes.map(b => b.right));
const upper = Math.min(...boxes.map(b => b.top)), lower = Math.max(...boxes.map(b => b.bottom));
return {dx: (view.left + view.right - left - right) / 2, dy: (top + view.bottom - upper - lower) / 2,
        fits: right - left + 2 * margin <= view.width && lower - upper + 2 * margin <= view.bottom - top};
"""

LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
ASSETS_QUERY = "{ assetNodes { assetKey { path } groupName } }"
RUNS_QUERY = """{ runsOrError { __typename ... on Runs { results {
  runId status assetSelection { path } } } } }"""
RUN_TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass(frozen=True)
class Webserver:
    url: str
    data_root: Path
    log: Path

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        assert "errors" not in body, body["errors"]
        return body["data"]

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def live_group_members(pgid: int) -> list[str]:
    """Processes of a process group that are still running (zombies waiting for init don't count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while listing
        state, _ppid, group = text.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            alive.append(text.split(" ", 1)[0] + " " + text[text.index("(") : text.rindex(")") + 1])
    return alive


def stop_group(process: subprocess.Popen) -> None:
    """Kill the server and everything it started (code server, run processes): they share its
    session, and Dagster's children outlive a killed parent otherwise (SETUP-NOTES)."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 15
    while (left := live_group_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind by the webserver: {left}"


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[Webserver]:
    home = tmp_path / "dagster_home"
    data_root = tmp_path / "data"
    home.mkdir()
    data_root.mkdir()
    # The default run coordinator queues runs for the daemon, which the webserver alone doesn't run;
    # the default coordinator hands a launched run straight to the run launcher (a subprocess).
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    env = dict(os.environ)
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "GEOCONCEPT_DATA_ROOT": str(data_root),
            "GEOCONCEPT_EXECUTOR": "in_process",  # one small step: no process per step
        }
    )
    port = free_port()
    log = tmp_path / "webserver.log"
    cmd = [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Webserver(f"http://127.0.0.1:{port}", data_root, log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert process.poll() is None, f"dagster-webserver exited ({process.returncode}):\n{server.log_tail()}"
            try:
                with urllib.request.urlopen(f"{server.url}/server_info", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"no /server_info after {SERVER_START_S} s:\n{server.log_tail()}"
            time.sleep(0.5)
        yield server
    finally:
        stop_group(process)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1600,1150",  # a ~1600×1000 page below the (headless) browser frame
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        with contextlib.suppress(WebDriverException):  # the browser may have died with the test
            driver.save_screenshot(str(tmp_path / "last-page.png"))  # what it showed when the test ended
        driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], object], what: str, timeout: float = UI_WAIT_S):
    # React re-renders replace elements under our feet and overlays come and go: look again.
    wait = WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.25,
        ignored_exceptions=(StaleElementReferenceException, ElementClickInterceptedException),
    )
    return wait.until(condition, message=f"timed out after {timeout} s waiting for {what}")


def visible(driver: WebDriver, xpath: str):
    """The first element matching `xpath` that is shown and enabled, or None."""
    return next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed() and e.is_enabled()), None)


def skip_community_dialog(driver: WebDriver) -> None:
    """A fresh browser profile gets Dagster's "Join the community" dialog once, a moment after the
    first page loads (it covers the page and closes open menus): skip it whenever it shows."""
    if skip := visible(driver, "//button[normalize-space()='Skip']"):
        skip.click()


def click(driver: WebDriver, xpath: str, what: str) -> None:
    def clicked(d: WebDriver) -> bool:
        skip_community_dialog(d)
        if button := visible(d, xpath):
            button.click()
            return True
        return False

    wait_for(driver, clicked, what)


def choose_from_menu(driver: WebDriver, opener: str, item: str, what: str) -> None:
    """Open a menu and click one of its items, opening it again if something closed it meanwhile."""

    def chosen(d: WebDriver) -> bool:
        skip_community_dialog(d)
        if entry := visible(d, item):
            entry.click()
            return True
        if not d.find_elements(By.XPATH, "//*[@role='menu']") and (button := visible(d, opener)):
            button.click()
        return False

    wait_for(driver, chosen, what)


def page_text(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def shown_as(label: str, name: str) -> bool:
    """The graph draws long names shortened in the middle: `layer_kopp…_geiger`."""
    if "…" not in label:
        return label == name
    head, tail = label.split("…", 1)
    return len(name) > len(head) + len(tail) and name.startswith(head) and name.endswith(tail)


def unmatched_labels(labels: list[str], names: set[str]) -> tuple[list[str], list[str]]:
    """Pair graph labels with asset names; return (names without a label, labels without a name)."""
    left = sorted(names)
    extra = []
    for label in sorted(labels, key=lambda s: "…" in s):  # exact names first
        match = next((n for n in left if shown_as(label, n)), None)
        if match is None:
            extra.append(label)
        else:
            left.remove(match)
    return left, extra


def graph_labels(driver: WebDriver) -> list[str]:
    return [e.text for e in driver.find_elements(By.XPATH, GRAPH_NODE_LABEL) if e.text]


def viewport_style(driver: WebDriver) -> str:
    return driver.find_element(By.CSS_SELECTOR, GRAPH_VIEWPORT).get_attribute("style")


def wait_until_moved(driver: WebDriver, before: str, what: str) -> None:
    """Wait until the graph's transform has changed and holds still (zoom steps are animated)."""
    last = {"style": before}

    def settled(d: WebDriver) -> bool:
        style = viewport_style(d)
        steady = style != before and style == last["style"]
        last["style"] = style
        return steady

    wait_for(driver, settled, what)


def graph_placement(driver: WebDriver) -> dict:
    toolbar = driver.find_element(By.XPATH, "//button[contains(., 'Materialize all')]").rect
    return driver.execute_script(GRAPH_PLACEMENT_JS, toolbar["y"] + toolbar["height"], GRAPH_MARGIN_PX)


def show_whole_graph(driver: WebDriver, names: set[str]) -> list[str]:
    """Hide the side bar, zoom out until the whole graph fits the canvas (the graph only draws the
    nodes in view) and centre it; return the labels of the drawn asset nodes."""
    wait_for(driver, graph_labels, "the asset graph")
    if visible(driver, GRAPH_SIDE_BAR):
        click(driver, "//button[.//*[@aria-label='panel_show_right']]", "the button that hides the side bar")
    for _ in range(MAX_ZOOM_STEPS):
        if graph_placement(driver)["fits"] and len(graph_labels(driver)) >= len(names):
            break
        before = viewport_style(driver)
        click(driver, "//button[.//*[@aria-label='zoom_out']]", "the graph's zoom-out button")
        wait_until_moved(driver, before, "the graph's zoom to settle")
    canvas = driver.find_element(By.CSS_SELECTOR, "[data-svg-viewport]")
    for _ in range(MAX_PAN_STEPS):  # the wheel pans by a zoom-dependent fraction of its delta
        placement = graph_placement(driver)
        if abs(placement["dx"]) < 4 and abs(placement["dy"]) < 4:
            break
        before = viewport_style(driver)
        wheel = ActionChains(driver).scroll_from_origin(
            ScrollOrigin.from_element(canvas), -round(placement["dx"]), -round(placement["dy"])
        )
        wheel.perform()
        wait_until_moved(driver, before, "the graph to pan")
    return graph_labels(driver)


def expected_assets() -> dict[str, str]:
    """Asset name → group, straight from the code location's Definitions."""
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}


def find_run(server: Webserver, short_id: str) -> dict:
    runs = server.graphql(RUNS_QUERY)["runsOrError"]["results"]
    matches = [r for r in runs if r["runId"].startswith(short_id)]
    assert len(matches) == 1, f"run {short_id}: found {runs}"
    return matches[0]


@pytest.mark.timeout(300)
def test_asset_graph_and_materialize_from_the_ui(webserver: Webserver, browser: WebDriver, tmp_path: Path):
    expected = expected_assets()  # imports the code location while the server finishes loading
    assert set(expected.values()) == GROUPS

    # The code location loaded, and the webserver serves every asset of `defs` in its group.
    entries = webserver.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    assert [e["name"] for e in entries] == ["pipelines.definitions"], entries
    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries
    served = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in webserver.graphql(ASSETS_QUERY)["assetNodes"]}
    assert served == expected

    # The global lineage: its side bar lists the five groups.
    browser.get(f"{webserver.url}/asset-groups")
    wait_for(browser, lambda d: set(page_text(d).split("\n")) >= GROUPS, f"the groups {sorted(GROUPS)} in the side bar")
    click(browser, "//button[normalize-space()='Hide navigation']", "Hide navigation")

    # Expand every group through the graph's settings menu; the URL then keeps the expanded state.
    choose_from_menu(
        browser,
        "(//button[.//*[@aria-label='settings']])[last()]",
        "//button[@role='menuitem'][contains(., 'Expand all groups')]",
        "Expand all groups in the graph settings menu",
    )
    wait_for(browser, lambda d: "expanded=" in d.current_url, "the expanded groups in the URL")
    graph_url = browser.current_url
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # close the menu
    labels = show_whole_graph(browser, set(expected))
    assert unmatched_labels(labels, set(expected)) == ([], [])
    browser.save_screenshot(str(tmp_path / "asset-graph.png"))

    # Materialize the small asset from its page. Its layers were never materialized, so Dagster
    # asks for confirmation first.
    browser.get(f"{webserver.url}/assets/{SMALL_ASSET}")
    wait_for(browser, lambda d: "Never materialized" in page_text(d), "the asset page of a fresh instance")
    click(browser, "//button[normalize-space()='Materialize']", "Materialize")
    launched = "//*[starts-with(normalize-space(text()), 'Launched run')]"

    def launched_or_confirm(d: WebDriver):
        if confirm := visible(d, "//button[normalize-space()='Confirm']"):
            confirm.click()
        return next((e.text for e in d.find_elements(By.XPATH, launched) if e.is_displayed()), None)

    toast = wait_for(browser, launched_or_confirm, "the 'Launched run' notice", timeout=60)
    run = find_run(webserver, toast.split()[-1])
    assert [s["path"] for s in run["assetSelection"]] == [[SMALL_ASSET]]

    # Follow the run in the UI until it ends; Dagster's own record decides whether it succeeded.
    browser.get(f"{webserver.url}/runs/{run['runId']}")
    deadline = time.monotonic() + RUN_DONE_S
    while (run := find_run(webserver, run["runId"]))["status"] not in RUN_TERMINAL:
        assert time.monotonic() < deadline, f"run still {run['status']} after {RUN_DONE_S} s"
        time.sleep(0.5)
    assert run["status"] == "SUCCESS", f"run {run['status']}; its page shows:\n{page_text(browser)[-4000:]}"
    wait_for(browser, lambda d: "RUN_SUCCESS" in page_text(d), "RUN_SUCCESS in the run's event log")
    wait_for(browser, lambda d: visible(d, "//*[normalize-space(text())='Success']"), "the run's Success tag")
    browser.save_screenshot(str(tmp_path / "run.png"))

    # The asset page shows the new materialization and its metadata; the value went to the data root.
    browser.get(f"{webserver.url}/assets/{SMALL_ASSET}")
    wait_for(browser, lambda d: "bank_version" in page_text(d), "the asset's metadata")
    assert "Never materialized" not in page_text(browser)
    browser.save_screenshot(str(tmp_path / "asset.png"))
    assert json.loads((webserver.data_root / "dagster_io" / f"{SMALL_ASSET}.json").read_text())["sha256"]

    # The graph again, now with the materialized asset, for the README.
    browser.get(graph_url)
    show_whole_graph(browser, set(expected))
    browser.save_screenshot(str(tmp_path / "asset-graph-after-run.png"))
    for name in ("asset-graph.png", "run.png", "asset.png", "asset-graph-after-run.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG"), name
    if os.environ.get("GEOCONCEPT_UPDATE_SCREENSHOTS") == "1":
        atomic.write_bytes(DOCS_SCREENSHOT, (tmp_path / "asset-graph-after-run.png").read_bytes())
