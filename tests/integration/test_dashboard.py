"""The broker's dashboard in a real headless browser (Debian's chromium).

The page fills itself in by polling /api/status from JavaScript, so what is
checked is the DOM chromium has built after running the page's script, not
the HTML the broker sent. `tests/setup_browser.sh` installs chromium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sockpool.client import Client

from .cluster import environment
from .conftest import Cluster
from .test_observe import http_get

SETUP_SCRIPT = Path(__file__).resolve().parents[1] / "setup_browser.sh"


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ["chromium", "chromium-browser", "google-chrome"]) if p), None)


def install_chromium_in_ci() -> str | None:
    """On CI, as root, install Debian's chromium rather than skip the test."""
    if find_chromium() is None and os.environ.get("CI") == "true" and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["bash", str(SETUP_SCRIPT)], capture_output=True, timeout=600)
    return find_chromium()


CHROMIUM = install_chromium_in_ci()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (run tests/setup_browser.sh: apt-get install chromium)"
)

WAIT_S = 30
# Browser time the page gets to poll and render before the DOM is dumped;
# virtual time, so a loaded machine makes it slower, not flakier.
PAGE_TIME_MS = 4000



def rendered_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran for PAGE_TIME_MS of browser time."""
    done = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--virtual-time-budget={PAGE_TIME_MS}",
            "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL, env=environment(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Page(HTMLParser):
    """What the tests look for: worker rows, text by element id, external references."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.workers: list[str] = []
        self.text_by_id: dict[str, str] = {}
        self.external: list[str] = []
        self._open_ids: list[tuple[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("class") == "worker":
            self.workers.append(a.get("data-name") or "")
        for name in ("src", "href"):
            value = a.get(name) or ""
            if value.startswith(("http:", "https:", "//")):
                self.external.append(value)
        if "id" in a and a["id"]:
            self._open_ids.append((tag, a["id"]))
            self.text_by_id.setdefault(a["id"], "")

    def handle_endtag(self, tag: str) -> None:
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open_ids:
            self.text_by_id[element_id] += data


def test_dashboard_shows_workers_as_they_join_and_recent_failures(observed, tmp_path):
    url = f"http://{observed.broker.metrics_address}/"

    served = Page(http_get(url)[0])
    assert served.external == []  # everything the page needs comes from the broker
    assert served.workers == []  # nothing is filled in until the script runs

    before = Page(rendered_dom(url, tmp_path / "profile1"))
    assert before.workers == []
    assert before.text_by_id["live"] == "live"  # the script polled the broker
    assert before.text_by_id["c-workers"] == "0"

    observed.add_worker(2, "--tasks", "tests.tasks", name="alpha")
    observed.add_worker(1, name="beta")
    with Client(observed.address) as client:
        assert client.submit("tests.tasks:fail", "disk full on /scratch").exception(WAIT_S) is not None
        assert list(client.map("square", range(20), timeout=WAIT_S)) == [x * x for x in range(20)]

    after = Page(rendered_dom(url, tmp_path / "profile2"))
    assert sorted(after.workers) == ["alpha", "beta"]
    assert after.text_by_id["c-workers"] == "2"
    assert after.text_by_id["c-processes"] == "3"
    assert after.text_by_id["c-completed"] == "20"
    # The unauthenticated page names the failure, never its message (which
    # may quote the job's arguments).
    assert "ValueError" in after.text_by_id["failures"]
    assert "disk full" not in after.text_by_id["failures"]
    assert "tests.tasks:fail" in after.text_by_id["tasks"] and "square" in after.text_by_id["tasks"]


def test_dashboard_shows_each_queue_and_schedule(observed, tmp_path):
    observed.add_worker(1, "--tasks", "tests.tasks", "--queues", "default", name="cpu")
    with Client(observed.address, operator=True) as client:
        client.pause_queue("gpu")
        client.with_options(queue="gpu").submit("tests.tasks:add", 1, 2)
        assert client.wait_accepted(WAIT_S)
        client.add_schedule("nightly <b>", "0 3 * * *", "tests.tasks:add", 1, 2, timezone="Europe/Paris")
        page = Page(rendered_dom(f"http://{observed.broker.metrics_address}/", tmp_path / "profile"))
    assert "gpu" in page.text_by_id["queues"] and "paused" in page.text_by_id["queues"]
    assert "default" in page.text_by_id["queues"]
    # The name is shown as text, never parsed as markup.
    assert "nightly <b>" in page.text_by_id["schedules"] and "Europe/Paris" in page.text_by_id["schedules"]


def test_dashboard_shows_jobs_no_connected_worker_can_run(tmp_path):
    cluster = Cluster(tmp_path, "--in-memory", "--metrics-port", "0", "--unserved-grace-s", "120")
    try:
        cluster.add_worker(1)
        with Client(cluster.address) as client:
            client.submit("mytasks:missing", 1)
            assert client.wait_accepted(WAIT_S)
            page = Page(rendered_dom(f"http://{cluster.broker.metrics_address}/", tmp_path / "profile"))
        assert "mytasks:missing" in page.text_by_id["unserved"]
        assert page.text_by_id["store-refusal"] == ""  # the store writes: nothing refused
    finally:
        cluster.stop()
