"""Helpers of the browser test: the Dagster UI as a real process, and Debian's headless Chromium.

Kept apart from the test so that the test reads as the story it checks (what a user sees), and so that the
plumbing (ports, process groups, waiting, the first-visit pop-up) can be reused by later UI tests.
"""

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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Git-ignored (.gitignore): screenshots, page sources and the webserver's log of the last run.
ARTIFACTS = REPO / ".test-artifacts" / "browser"
# Debian's packages `chromium` and `chromium-driver` (`make system-deps`): never a downloaded browser.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# The code location's status, as the UI's own queries see it (LOADING until definitions are built).
LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(base_url: str, query: str, timeout: float = 10) -> dict:
    request = urllib.request.Request(f"{base_url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["data"]


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _location_ready(base_url: str) -> bool:
    """True once every code location has loaded; raises when one failed to load (e.g. a bad retrain.yaml)."""
    try:
        with urllib.request.urlopen(f"{base_url}/server_info", timeout=5) as response:
            if response.status != 200:
                return False
        data = graphql(base_url, LOCATIONS_QUERY)
    except (urllib.error.URLError, OSError, ValueError):
        return False  # not listening yet, or not answering GraphQL yet
    entries = data["workspaceOrError"].get("locationEntries") or []
    for entry in entries:
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise AssertionError(f"code location {entry['name']} failed to load: {loaded['message'][-2000:]}")
    return bool(entries) and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)


@contextlib.contextmanager
def dagster_webserver(config: Path, home: Path, timeout_s: float = 120):
    """`dagster-webserver` on the instance at ``home`` with the code location of ``config``; yields its URL.

    Only the webserver (no daemon): the test looks at what the demo recorded and must not start runs. The
    process runs in its own process group (the code server is a child), stopped by that group's id.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RETRAIN_CONFIG": str(config), "DAGSTER_HOME": str(home)}
    env.pop("RETRAIN_DATABASE_URL", None)
    env.pop("RETRAIN_ARTIFACT_ROOT", None)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / "webserver.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port),
             "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _location_ready(base_url):
            if process.poll() is not None:
                raise AssertionError(f"dagster-webserver exited with {process.returncode}:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"dagster-webserver did not serve {base_url} with its code location loaded "
                                     f"within {timeout_s:.0f} s; log tail ({log_path}):\n{log_tail(log_path)}")
            time.sleep(1)
        yield base_url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a child (the code server) that outlived its parent


@contextlib.contextmanager
def chromium(width: int = 1600, height: int = 1000):
    """Headless Debian Chromium through Debian's chromedriver. Both paths are explicit, so Selenium Manager
    is never consulted (it would download a browser or a driver otherwise)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    assert not missing, f"{' and '.join(missing)} missing: `make system-deps` installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def dismiss_community_popup(driver, timeout_s: float) -> bool:
    """Click "Skip" on the "Join the Dagster community" dialog of the OSS UI, if it shows up in ``timeout_s``.

    Dagster shows it once per instance (server side: $DAGSTER_HOME/.nux/nux.yaml; browser side: local
    storage), only on http://127.0.0.1 / localhost, and one second after the page loads; it covers the page.
    Returns whether it was dismissed.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    skip = (By.XPATH, "//*[@role='dialog'][.//*[contains(., 'Join the Dagster community')]]"
                      "//button[normalize-space(.)='Skip']")
    try:
        WebDriverWait(driver, timeout_s).until(EC.element_to_be_clickable(skip)).click()
    except TimeoutException:
        return False
    WebDriverWait(driver, 10).until(EC.invisibility_of_element_located(skip))
    return True


def wait_until(read, ok, timeout_s: float, what: str):
    """Poll ``read()`` until ``ok`` accepts its value and return it; fail with the last value (what the page
    showed) otherwise. The UI fills pages in as its queries answer, so one look is never enough."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; the page shows: {value!r}")
        time.sleep(0.5)


def _visible(driver, xpath: str, timeout_s: float = 30):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s).until(EC.element_to_be_clickable((By.XPATH, xpath)))
    except TimeoutException:
        raise AssertionError(f"nothing clickable at {xpath} after {timeout_s:.0f} s") from None


def click(driver, xpath: str, timeout_s: float = 30):
    _visible(driver, xpath, timeout_s).click()


# The asset graph's own toolbar (zoom buttons and its options menu), bottom right of the graph.
GRAPH_TOOLBAR = "//*[@id='zoom-slider-container']"


def expand_all_groups(driver) -> bool:
    """Open every group of the global lineage (with several groups the UI shows them collapsed, without their
    assets), through the graph's options menu. With a single group the menu has no such item: nothing to do."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    click(driver, f"{GRAPH_TOOLBAR}//button[.//*[@aria-label='settings']]")
    _visible(driver, "//button[@role='menuitem'][contains(., 'orientation')]", 10)  # the menu is open
    expand = driver.find_elements(By.XPATH, "//button[@role='menuitem'][contains(., 'Expand all groups')]")
    if expand:
        expand[0].click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # the menu stays open otherwise
    return bool(expand)


def fit_graph(driver, max_steps: int = 40) -> None:
    """Show the whole graph: a double click on the background fits it to the width (the UI's own "zoom to
    fit"), then "Zoom out" until it fits in height too, so that one screenshot shows every group."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    viewport = driver.find_element(By.CSS_SELECTOR, "[data-svg-viewport]")
    size = viewport.size  # offsets are from the centre: a corner of the background, away from any node
    ActionChains(driver).move_to_element_with_offset(viewport, -size["width"] // 2 + 8,
                                                     -size["height"] // 2 + 8).double_click().perform()
    fits = """const v = arguments[0].getBoundingClientRect();
              const g = arguments[0].querySelector('svg').getBoundingClientRect();
              return g.top >= v.top - 1 && g.bottom <= v.bottom + 1 && g.left >= v.left - 1 && g.right <= v.right + 1;"""
    for _ in range(max_steps):
        time.sleep(0.3)  # the zoom is animated
        if driver.execute_script(fits, viewport):
            return
        click(driver, f"{GRAPH_TOOLBAR}//button[.//*[@aria-label='zoom_out']]")
    raise AssertionError(f"the asset graph does not fit in the window after {max_steps} zoom-outs")


def _graph_boxes(driver) -> dict:
    """The asset graph as drawn: group boxes and asset nodes with their SVG coordinates, and each node's
    border colour (how the lineage shows an asset's state at a glance)."""
    return driver.execute_script(r"""
        const box = fo => ['x', 'y', 'width', 'height'].map(a => parseFloat(fo.getAttribute(a)));
        const all = [...document.querySelectorAll('[data-svg-viewport] foreignObject')];
        // Zoomed out, a node is a coloured box whose style names its accent (--minimal-border:
        // var(--color-accent-red)); zoomed in, the computed border colour says the same.
        const border = fo => { const b = fo.querySelector('[class*="AssetNodeBox"]');
                               if (!b) return null;
                               const accent = (b.getAttribute('style') || '').match(/--minimal-border:\s*var\(--color-accent-(\w+)\)/);
                               return accent ? accent[1] : getComputedStyle(b).borderTopColor; };
        const name = fo => { const n = fo.querySelector('[class*="assetName"]');
                             if (!n) return null;
                             const t = n.querySelector('[data-tooltip]');
                             return t ? t.dataset.tooltip : n.textContent.trim() || null; };
        return {
          groups: all.filter(fo => fo.classList.contains('group'))
                     .map(fo => [fo.querySelector('[data-tooltip]')?.dataset.tooltip, box(fo)]),
          nodes: all.filter(fo => !fo.classList.contains('group')).map(fo => [name(fo), box(fo), border(fo)])
                    .filter(([name]) => name),
        };""")


def _in_groups(boxes: dict, value) -> dict:
    """{group: {asset name: value(node)}}, by which group box holds each node; {None: ...} when the graph
    has a single group (the UI then draws no group box, nor its name anywhere on the page)."""
    if not boxes["groups"]:
        return {None: {node[0]: value(node) for node in boxes["nodes"]}} if boxes["nodes"] else {}
    inside = lambda n, g: g[0] <= n[0] and g[1] <= n[1] and n[0] + n[2] <= g[0] + g[2] and n[1] + n[3] <= g[1] + g[3]
    return {group: {node[0]: value(node) for node in boxes["nodes"] if inside(node[1], box)}
            for group, box in boxes["groups"]}


def lineage_groups(driver) -> dict[str | None, set[str]]:
    """The asset names drawn inside each group box of the asset graph: {group name: {asset names}}, or
    {None: {asset names}} when the graph has a single group.

    Read from the graph itself (SVG boxes and their coordinates), not the sidebar's tree of names, so it
    says what the lineage draws where. Nodes scrolled out of view are not drawn (fit the graph first).
    """
    return {group: set(nodes) for group, nodes in _in_groups(_graph_boxes(driver), lambda node: None).items()}


def _hue(css: str | None) -> str:
    if css in ("green", "red"):  # the accent the node's style names
        return css
    if not css or "(" not in css:
        return "none"
    red, green, _ = (float(x) for x in css[css.index("(") + 1:].rstrip(")").split(",")[:3])
    return "green" if green > 1.5 * red else "red" if red > 1.5 * green else "other"


def lineage_colors(driver) -> dict[str | None, dict[str, str]]:
    """{group: {asset name: "green" | "red" | "other"}}: each node's border as the lineage draws it (green:
    the latest materialization and its checks are fine; red: the latest step or a blocking check failed)."""
    return _in_groups(_graph_boxes(driver), lambda node: _hue(node[2]))


def check_statuses(driver) -> dict[str, str]:
    """{check name: status} as listed on an asset's Checks tab (e.g. "Succeeded", "Failed"): each row holds the
    name (its ``title``) followed by the status. Read in one script, as React re-renders the rows."""
    return driver.execute_script("""
        return Object.fromEntries([...document.querySelectorAll('[class*="checkRow"] [title]')]
            .filter(name => name.nextElementSibling && name.nextElementSibling.tagName === 'SPAN')
            .map(name => [name.title, name.nextElementSibling.textContent.trim()]));""")


def latest_evaluation(driver) -> str | None:
    """The "Evaluation result" (e.g. "Passed", "Failed") of the check open on the Checks tab, if shown."""
    return driver.execute_script("""
        const label = [...document.querySelectorAll('span')].find(s => s.textContent === 'Evaluation result');
        return label && label.nextElementSibling ? label.nextElementSibling.textContent.trim() : null;""")


def save_evidence(driver, name: str) -> list[Path]:
    """A screenshot and the page source of what the browser shows now, under ARTIFACTS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot, source = ARTIFACTS / f"{name}.png", ARTIFACTS / f"{name}.html"
    driver.save_screenshot(str(screenshot))
    source.write_text(driver.page_source)
    return [screenshot, source]


@contextlib.contextmanager
def evidence_on_failure(driver, name: str):
    """Re-raise any failure inside the block with the paths of a screenshot and the page source taken then."""
    try:
        yield
    except Exception as error:
        try:
            paths = save_evidence(driver, f"FAILED-{name}")
            where = "saved " + " and ".join(str(p) for p in paths)
            where += f"; page {driver.current_url}"
        except Exception as evidence_error:  # the browser itself may be gone
            where = f"no evidence saved ({evidence_error!r})"
        raise AssertionError(f"{name}: {error} [{where}]") from error
