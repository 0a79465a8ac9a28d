"""The web UI in a real browser (Debian's chromium driven by Playwright) against a real daemon.

Its library holds real images, a video, music and documents, names that are markup, and
seventy notes so that the grid needs a second page. Each page renders with no breach of its
Content-Security-Policy and no script error; the round trip search → item → play (the range
request served) → rate (the rating lands in the catalog) → recommend works by clicking;
markup in names never runs; axe-core (vendored in ``tests/vendor``) finds no serious
accessibility fault. With a second node: its share is browsed, previewed and fetched with the
progress shown; a share made by clicking invites it and it joins; it pairs with a code the
devices page shows (and a withdrawn code pairs no one). Screenshots of each page are kept in
the test's folder."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from . import media
from .helpers import DaemonProcess, cli, cli_json, new_node

pytestmark = pytest.mark.slow

AXE = Path(__file__).with_name("vendor") / "axe.min.js"
NOTES = 70  # more than one page of the grid (60)


def browser_path() -> str:
    found = os.environ.get("PEERLIGHT_BROWSER") or next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None:
        pytest.fail("no chromium found: `make test` checks for it (Debian/Ubuntu: apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("browser")
    library = root / "library"
    library.mkdir()
    media.image(library / "red.png", (220, 30, 30), (320, 200))
    media.image(library / "blue.png", (30, 60, 220), (200, 320))
    media.video(library / "clip.mp4", [(1.0, Image.new("RGB", (160, 120), (20, 160, 60))), (1.0, Image.new("RGB", (160, 120), (200, 200, 40)))])
    media.tone(library / "song.flac", seconds=3.0, tags={"title": "<img src=x onerror=window.__owned=1>"})
    (library / "fox.txt").write_text("Notes from the forest. The quick brown fox jumps over the lazy dog at dawn. Then it sleeps.\n")
    (library / "<svg onload=window.__owned=1>.txt").write_text("A document whose name is markup, about sailing boats.\n")
    (library / "page.html").write_text("<html><script>window.__owned = 1</script></html>\n")
    notes = library / "notes"
    notes.mkdir()
    for n in range(NOTES):
        (notes / f"note-{n:02}.txt").write_text(f"Note {n}: a line about topic number {n} and nothing else.\n")
    data_dir = new_node(root / "node", f'[ui]\nport = 0\ndownloads = "{root / "downloads"}"\n')
    daemon = DaemonProcess(data_dir)
    assert daemon.wait_ready() == "ready", daemon.stderr()
    try:
        cli_json(data_dir, "library", "add", str(library))
        assert cli(data_dir, "index", "--wait", timeout=600).returncode == 0
        yield {"data_dir": data_dir, "root": root, "downloads": root / "downloads"}
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path(), args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


class Tab:
    """A logged-in page that records what went wrong in it: policy breaches, script errors, dialogs."""

    def __init__(self, chromium: Any, node: dict[str, Any], bypass_csp: bool = False) -> None:
        link = cli_json(node["data_dir"], "ui", "--no-browser")
        self.address = link["address"]
        self.context = chromium.new_context(bypass_csp=bypass_csp)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.responses: list[tuple[str, int]] = []
        self.page.on("console", lambda m: self.problems.append(f"{m.text} {m.location.get('url', '')}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("response", lambda r: self.responses.append((r.url, r.status)))
        self.page.goto(link["url"])  # the one-time link: a cookie, then the library

    def open(self, path: str) -> Any:
        self.page.goto(self.address + path)
        self.page.wait_for_load_state("networkidle")
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(chromium, node) -> Iterator[Tab]:  # type: ignore[no-untyped-def]
    opened = Tab(chromium, node)
    yield opened
    opened.close()


def _until(condition: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _rating(node: dict[str, Any], content_hash: str) -> float | None:
    with sqlite3.connect(f"file:{node['data_dir'] / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT rating FROM ratings WHERE content_hash = ?", (content_hash,)).fetchone()
    return row[0] if row else None


def test_every_page_renders_within_its_policy(tab, node, tmp_path) -> None:
    page = tab.open("/")
    assert page.locator("h1").inner_text().startswith("Library")
    assert page.locator(".grid .card").count() == 60 and page.locator(".more").count() == 1
    page.screenshot(path=str(tmp_path / "library.png"))
    page.locator("a", has_text="image").first.click()
    page.wait_for_load_state("networkidle")
    thumbs = page.locator(".card img")
    assert thumbs.count() == 2 and all(thumbs.nth(i).evaluate("img => img.naturalWidth") > 0 for i in range(2))
    for path, marker in (("/search?q=fox", ".results .card"), ("/recommend", "h1"), ("/peers", "table"), ("/shares", "form"), ("/devices", "form"), ("/status", "#live")):
        tab.open(path)
        assert page.locator(marker).count() >= 1, path
        page.screenshot(path=str(tmp_path / f"{path.strip('/').split('?')[0] or 'home'}.png"))
    assert page.locator("#live").inner_text().startswith(f"{NOTES + 7} items")
    assert not tab.problems, tab.problems  # no policy breach, no script error on any page
    assert all((tmp_path / name).stat().st_size > 5000 for name in ("library.png", "search.png", "status.png"))


def test_scrolling_to_the_end_of_the_grid_loads_the_next_page(tab) -> None:
    page = tab.open("/")
    page.locator(".more").scroll_into_view_if_needed()
    page.locator(".grid .card").nth(60).wait_for()  # locators wait in Playwright's own world: the page's CSP forbids eval
    assert page.locator(".grid .card").count() == NOTES + 7 and page.locator(".more").count() == 0
    assert not tab.problems, tab.problems


def test_search_open_play_rate_then_recommend(tab, node) -> None:
    page = tab.open("/")
    page.fill("#q", "a fox jumping over a dog")
    page.press("#q", "Enter")
    page.wait_for_load_state("networkidle")
    first = page.locator(".results .card a").first
    assert "fox.txt" in first.inner_text() and page.locator(".results .passage").first.inner_text()
    first.click()
    page.wait_for_load_state("networkidle")
    assert "fox" in page.locator(".document mark").inner_text()
    fox = page.url.split("/item/")[1].split("?")[0]
    page.locator("button[aria-label='4 stars']").click()
    page.locator("#rating", has_text="Rated 8").wait_for()
    assert _rating(node, fox) == 8.0  # the rating landed in the catalog
    # Play the song: the browser asks for ranges, the player reports it was opened.
    tab.open("/?modality=audio")
    page.locator(".card a").first.click()
    page.wait_for_load_state("networkidle")
    page.evaluate("document.querySelector('audio').play()")
    _until(lambda: page.evaluate("() => document.querySelector('audio').currentTime") > 0.2)
    assert any("/media/" in url and status == 206 for url, status in tab.responses), tab.responses[-5:]
    song = page.url.split("/item/")[1]
    with sqlite3.connect(f"file:{node['data_dir'] / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT COUNT(*) FROM feedback_events WHERE content_hash = ? AND kind = 'opened'", (song,)).fetchone()[0] == 1
    tab.open("/recommend")
    assert page.locator(".recommendations li").count() >= 1
    assert not tab.problems, tab.problems


def test_markup_in_names_and_files_never_runs(tab) -> None:
    for path in ("/", "/?modality=text", "/search?q=sailing+boats", "/?modality=audio"):
        page = tab.open(path)
        for link in page.locator(".card a").all()[:8]:
            tab.open(link.get_attribute("href"))
            assert page.evaluate("window.__owned") is None
            page.go_back()
    assert not [p for p in tab.problems if p.startswith("dialog")]
    assert tab.open("/").evaluate("window.__owned") is None


def test_a_cross_site_form_cannot_rate(chromium, node) -> None:
    tab = Tab(chromium, node)
    try:
        page = tab.open("/?modality=image")
        red = page.locator(".card a").first.get_attribute("href").split("/item/")[1]
        page.set_content(f'<form method="post" action="{tab.address}/item/{red}/rating"><input name="rating" value="2"></form>')
        with page.expect_navigation():
            page.evaluate("document.forms[0].submit()")
        assert _rating(node, red) is None
    finally:
        tab.close()


def test_no_serious_accessibility_fault(chromium, node) -> None:
    tab = Tab(chromium, node, bypass_csp=True)  # axe is injected as a script: the policy would refuse it
    try:
        faults = {}
        for path in ("/", "/search?q=fox", "/search?q=fox&date_from=2000-01-01&stars=1", "/status", "/recommend", "/peers", "/shares", "/shares/local", "/devices"):
            page = tab.open(path)
            page.add_script_tag(path=str(AXE))
            found = page.evaluate("async () => (await axe.run(document)).violations.map(v => [v.id, v.impact, v.nodes.length])")
            serious = [v for v in found if v[1] in ("serious", "critical")]
            if serious:
                faults[path] = serious
        page = tab.open("/?modality=text")
        page.locator(".card a").first.click()
        page.wait_for_load_state("networkidle")
        page.add_script_tag(path=str(AXE))
        found = page.evaluate("async () => (await axe.run(document)).violations.map(v => [v.id, v.impact, v.nodes.length])")
        faults.update({"item": [v for v in found if v[1] in ("serious", "critical")]} if any(v[1] in ("serious", "critical") for v in found) else {})
        assert not faults, faults
    finally:
        tab.close()


def test_a_peer_s_share_is_browsed_and_fetched_with_its_progress_shown(chromium, node, tmp_path) -> None:
    """A second node shares a picture; this one adds it; in the browser: the peer's share, its
    preview, Fetch, the progress bar filling, and the file saved whole."""
    library = tmp_path / "pictures"
    library.mkdir()
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
    Image.fromarray(noise).save(library / "noise.png")  # ~5.8 MB that does not compress
    media.image(library / "<img src=x onerror=window.__owned=1>.png", (10, 200, 10))  # a peer's name that is markup
    sharer_dir = new_node(tmp_path / "sharer")
    sharer = DaemonProcess(sharer_dir)
    tab = None
    try:
        assert sharer.wait_ready() == "ready", sharer.stderr()
        cli_json(sharer_dir, "library", "add", str(library))
        assert cli(sharer_dir, "index", "--wait", timeout=300).returncode == 0
        made = cli_json(sharer_dir, "share", "create", "pictures", "--permission", "public", "--collection", str(library))
        cli_json(node["data_dir"], "peers", "add", made["addresses"][0], "--wait")
        tab = Tab(chromium, node)
        page = tab.open("/peers")
        page.locator("a", has_text="pictures").click()
        page.wait_for_load_state("networkidle")
        assert page.locator(".peer-items img").first.evaluate("img => img.naturalWidth") > 0  # the share's own preview
        assert page.locator(".peer-items .name", has_text="<img src=x onerror=window.__owned=1>.png").count() == 1  # shown as text
        assert page.evaluate("() => window.__owned") is None
        page.locator("button[aria-label='Fetch noise.png']").click()
        page.locator(".job-state", has_text="Saved").wait_for(timeout=60_000)
        assert page.locator("progress").evaluate("p => p.value === p.max && p.max > 5000000")
        assert (node["downloads"] / "noise.png").read_bytes() == (library / "noise.png").read_bytes()
        assert not tab.problems, tab.problems
    finally:
        if tab is not None:
            tab.close()
        sharer.stop()


def test_a_device_pairs_from_the_devices_page_and_an_offer_can_be_withdrawn(chromium, node, tmp_path) -> None:
    """Show a pairing code; another node joins with it; the page says so and lists the device.
    A second code, withdrawn from the page, no longer pairs anyone. Unpairing from the page."""
    laptop_dir = new_node(tmp_path / "laptop")
    laptop = DaemonProcess(laptop_dir)
    tab = None
    try:
        assert laptop.wait_ready() == "ready", laptop.stderr()
        laptop_id = cli_json(laptop_dir, "status")["peer_id"]
        tab = Tab(chromium, node)
        page = tab.open("/devices")

        def offer() -> str:
            page.select_option("#pair-scope", "local")
            page.get_by_role("button", name="Show a pairing code").click()
            page.locator(".pairing .job-state", has_text=re.compile(r"^Pairing code [A-Z0-9]{4}-")).wait_for(timeout=30_000)
            return page.locator(".pair-join").inner_text().split("--join ", 1)[1]

        paired = cli_json(laptop_dir, "devices", "pair", "--join", offer(), "--scope", "local")
        page.locator(".pairing .job-state", has_text="Paired with").wait_for(timeout=30_000)
        assert page.locator(".pairing .job-cancel").count() == 0 and paired["paired"]["peer_id"]
        page = tab.open("/devices")
        assert page.locator("td code", has_text=laptop_id).count() == 1

        withdrawn = offer()
        page.get_by_role("button", name="Withdraw the code").click()
        page.locator(".pairing .job-state", has_text="Cancelled").wait_for(timeout=10_000)
        refused = cli(laptop_dir, "devices", "pair", "--join", withdrawn, "--scope", "local", "--json", timeout=120)
        assert refused.returncode != 0, refused.stdout

        page.locator("button[aria-label^='Unpair']").click()  # the one device
        page.locator("text=No device paired yet").wait_for(timeout=10_000)
        assert not tab.problems, tab.problems
    finally:
        if tab is not None:
            tab.close()
        laptop.stop()


def test_a_share_made_in_the_browser_invites_another_node_which_joins(chromium, node, tmp_path) -> None:
    """Create a share of the library by clicking, make an invite, read its QR code's presence;
    another node joins with the text and searches the share; the grant is revoked by a click."""
    friend_dir = new_node(tmp_path / "friend")
    friend = DaemonProcess(friend_dir)
    tab = None
    try:
        assert friend.wait_ready() == "ready", friend.stderr()
        tab = Tab(chromium, node)
        page = tab.open("/shares")
        page.fill("#share-name", "for friends")
        page.select_option("#share-scope", "local")
        page.select_option("#share-permission", "members")
        page.locator(".create-share input[name=library]").first.check()
        page.get_by_role("button", name="Create").click()
        page.wait_for_url("**/shares/for%20friends")
        assert page.locator("h1").inner_text().startswith("for friends")
        page.get_by_role("button", name="Make an invite").click()
        invite = page.locator("textarea[aria-label=Invite]")
        invite.wait_for(timeout=10_000)
        assert page.locator("img.qr").evaluate("img => img.naturalWidth") > 100
        joined = cli_json(friend_dir, "join", invite.input_value())
        assert joined
        found = cli_json(friend_dir, "search", "quick brown fox", "--peers")
        assert any((r.get("name") or "") == "fox.txt" for r in found["results"]), found
        page = tab.open("/shares/for%20friends")
        friend_id = cli_json(friend_dir, "status")["peer_id"]
        assert page.locator("td code", has_text=friend_id).count() == 1  # the invite is bound to who used it
        page.locator("button[aria-label^='Revoke grant']").click()
        page.wait_for_load_state("networkidle")
        page.locator("td", has_text="revoked").wait_for(timeout=10_000)
        assert not tab.problems, tab.problems
    finally:
        if tab is not None:
            tab.close()
        friend.stop()
