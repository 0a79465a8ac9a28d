"""The web UI over HTTP, against a real daemon with a real library: login, pages, media, rating, and the attacks.

One daemon for the module (its models load once); each test logs in its own browser (an
httpx client with a cookie jar) through a fresh one-time URL from ``peerlight ui``."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from PIL import Image

from . import media
from .helpers import PEERLIGHT, DaemonProcess, cli, cli_json, new_node

HOSTILE_NAME = "<img src=x onerror=alert(1)>.txt"
HOSTILE_TITLE = "<script>alert('title')</script>"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Any:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("webui")
    library = root / "library"
    library.mkdir()
    media.image(library / "red.png", (220, 30, 30), (320, 200))
    media.tone(library / "song.flac", seconds=2.0, tags={"title": HOSTILE_TITLE})
    (library / "fox.txt").write_text("Notes from the forest. The quick brown fox jumps over the lazy dog at dawn. Then it sleeps.\n")
    (library / HOSTILE_NAME).write_text("A document whose name is markup, about sailing boats on the open sea.\n")
    (library / "page.html").write_text("<html><script>document.title = 'owned'</script></html>\n")
    media.pdf(library / "report.pdf", ["A report on tide tables and harbour depths."])
    data_dir = new_node(root / "node")
    daemon = DaemonProcess(data_dir)
    assert daemon.wait_ready() == "ready", daemon.stderr()
    try:
        cli_json(data_dir, "library", "add", str(library))
        assert cli(data_dir, "index", "--wait", timeout=300).returncode == 0
        yield {"data_dir": data_dir, "library": library, "daemon": daemon}
    finally:
        daemon.stop()


def client(link: dict[str, Any]) -> httpx.Client:
    """A client of the UI at its private host name (p-<label>.localhost: browsers resolve it to this
    machine, this resolver may not), connecting to 127.0.0.1."""
    host = link["address"].removeprefix("http://")
    return httpx.Client(base_url=f"http://127.0.0.1:{host.rsplit(':', 1)[1]}", headers={"Host": host}, timeout=30)


def path_of(link: dict[str, Any]) -> str:
    return link["url"].removeprefix(link["address"])


@contextmanager
def logged_in(node: dict[str, Any]) -> Iterator[httpx.Client]:
    """A browser logged in through a fresh one-time link."""
    link = cli_json(node["data_dir"], "ui", "--no-browser")
    with client(link) as browser:
        assert browser.get(path_of(link)).status_code == 303
        yield browser


def hashes(page: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r'href="/item/([0-9a-f]{64})', page)))


def item_named(client: httpx.Client, name: str) -> str:
    page = client.get("/").text
    for content_hash in hashes(page):
        if f"<h1>{name}</h1>" in client.get(f"/item/{content_hash}").text:
            return content_hash
    raise AssertionError(f"no item {name!r} in the grid")


def csrf_of(page: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert match
    return match.group(1)


def test_only_a_one_time_login_link_opens_the_ui(node) -> None:
    link = cli_json(node["data_dir"], "ui", "--no-browser")
    assert re.fullmatch(r"http://p-[0-9a-f]{12}\.localhost:\d+", link["address"])
    with client(link) as stranger:
        assert stranger.get("/").status_code == 401  # the port alone gives nothing
        assert stranger.get("/media/" + "0" * 64).status_code == 401
        assert stranger.get("/login?token=guessed").status_code == 401
    with client(link) as browser:
        login = browser.get(path_of(link))
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and cookie.startswith("peerlight_session_")
        assert browser.get("/").status_code == 200
    with client(link) as second:
        assert second.get(path_of(link)).status_code == 401  # used once already
    port = link["address"].rsplit(":", 1)[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as by_address:  # only the private name is served
        assert by_address.get(path_of(cli_json(node["data_dir"], "ui", "--no-browser"))).status_code == 421


def test_another_local_user_cannot_get_a_login_link(node) -> None:
    """The login link comes over the control socket, in the node's 0700 data directory."""
    other = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--bounding-set", "-dac_override,-dac_read_search", str(PEERLIGHT), "ui", "--no-browser", "--data-dir", str(node["data_dir"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode != 0 and "login" not in other.stdout
    assert (os.stat(node["data_dir"]).st_mode & 0o077) == 0


def test_another_local_user_s_connections_get_no_answer_at_all(node) -> None:
    """Not even a refusal: another user's connection to the UI's port is closed unanswered, so it
    can neither probe the UI nor hold its connections (this user's own programs are answered)."""
    port = int(cli_json(node["data_dir"], "ui", "--no-browser")["address"].rsplit(":", 1)[1])
    probe = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=10)\n"
        "s.sendall(b'GET /login HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "s.settimeout(10)\n"
        "try:\n    print(repr(s.recv(12)))\nexcept ConnectionResetError:\n    print(repr(b''))\n"
    )
    other = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    mine = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "b''", (other.stdout, other.stderr[-500:])
    assert mine.stdout.strip() == "b'HTTP/1.1 421'", (mine.stdout, mine.stderr[-500:])


def test_pages_render_with_a_strict_policy_and_no_path_in_any_url(node) -> None:
    with logged_in(node) as browser:
        for path in ("/", "/search?q=fox", "/recommend", "/peers", "/status"):
            page = browser.get(path)
            assert page.status_code == 200, (path, page.text[-500:])
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
            assert page.headers["x-content-type-options"] == "nosniff"
            assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)  # no inline script
            urls = re.findall(r'(?:href|src|hx-get|hx-post|action)="([^"]*)"', page.text)
            assert urls and not [u for u in urls if str(node["library"]) in u or "%2F" in u.upper()], urls
        grid = browser.get("/").text
        assert '<p class="passage excerpt">Notes from the forest. The quick brown fox' in grid  # a document's card shows its opening
        assert len(hashes(grid)) == 6 and 'class="grid"' in grid


def test_search_shows_the_passage_and_an_item_shows_it_marked(node) -> None:
    with logged_in(node) as browser:
        found = browser.get("/search", params={"q": "fox jumping over a dog", "mode": "hybrid"}).text
        fox = item_named(browser, "fox.txt")
        assert hashes(found)[0] == fox
        link = re.search(rf'href="(/item/{fox}\?passage=[^"]+)"', found)
        assert link and 'class="passage"' in found
        item = browser.get(link.group(1).replace("&amp;", "&")).text
        assert "<mark>" in item and "fox" in item.split("<mark>")[1].split("</mark>")[0]
        similar = browser.get(f"/similar/{fox}")
        assert similar.status_code == 200 and fox not in hashes(similar.text.split('class="grid results"')[1])


def test_names_and_metadata_that_are_markup_are_shown_as_text(node) -> None:
    with logged_in(node) as browser:
        pages = browser.get("/").text + browser.get("/search", params={"q": "sailing boats"}).text
        for content_hash in hashes(browser.get("/").text):
            pages += browser.get(f"/item/{content_hash}").text
        assert "<img src=x" not in pages and "&lt;img src=x onerror=alert(1)&gt;" in pages
        assert "<script>alert" not in pages and "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in pages


def test_media_are_served_by_range_and_markup_only_as_a_download(node) -> None:
    with logged_in(node) as browser:
        song = item_named(browser, "song.flac")
        size = (node["library"] / "song.flac").stat().st_size
        whole = browser.get(f"/media/{song}")
        assert whole.status_code == 200 and len(whole.content) == size and whole.headers["accept-ranges"] == "bytes"
        part = browser.get(f"/media/{song}", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.headers["content-range"] == f"bytes 100-199/{size}"
        assert part.content == (node["library"] / "song.flac").read_bytes()[100:200]
        tail = browser.get(f"/media/{song}", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and len(tail.content) == 10
        assert browser.get(f"/media/{song}", headers={"Range": f"bytes={size}-"}).status_code == 416
        assert "sandbox" in whole.headers["content-security-policy"]
        page = item_named(browser, "page.html")
        served = browser.get(f"/media/{page}")
        assert served.headers["content-type"] == "application/octet-stream" and served.headers["content-disposition"] == "attachment"
        report = item_named(browser, "report.pdf")  # no browser's PDF viewer runs in a sandboxed document: its text is on the item's page
        assert browser.get(f"/media/{report}").headers["content-disposition"] == "attachment"
        assert "tide tables and harbour depths" in browser.get(f"/item/{report}").text
        assert browser.get("/media/../../etc/passwd").status_code == 404
        assert browser.get("/media/" + "a" * 64).status_code == 404


def test_thumbnails_are_made_once_and_kept(node) -> None:
    with logged_in(node) as browser:
        red = item_named(browser, "red.png")
        first = browser.get(f"/thumb/{red}")
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(first.content))
        assert max(image.size) <= 256 and image.getpixel((image.size[0] // 2, image.size[1] // 2))[0] > 180  # red
        kept = node["data_dir"] / "thumbnails" / red[:2] / f"{red}.jpg"
        assert kept.read_bytes() == first.content and browser.get(f"/thumb/{red}").content == first.content
        assert browser.get(f"/thumb/{item_named(browser, 'song.flac')}").status_code == 404  # audio: a card, no thumbnail


def test_a_change_needs_the_page_s_csrf_token_and_origin(node) -> None:
    with logged_in(node) as browser:
        fox = item_named(browser, "fox.txt")
        page = browser.get(f"/item/{fox}").text
        token = csrf_of(page)
        rate = f"/item/{fox}/rating"
        assert browser.post(rate, data={"rating": "8"}).status_code == 403  # a cross-site form post: no token
        assert browser.post(rate, data={"rating": "8"}, headers={"X-CSRF-Token": "forged"}).status_code == 403
        cross = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
        assert browser.post(rate, data={"rating": "8"}, headers=cross).status_code == 403
        assert browser.post(rate, data={"rating": "8"}, headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert _rating(node, fox) is None  # none of those changed anything
        done = browser.post(rate, data={"rating": "8"}, headers={"X-CSRF-Token": token, "Origin": "http://" + browser.headers["host"]})
        assert done.status_code == 200 and "Rated 8" in done.text
        assert _rating(node, fox) == 8.0
        liked = browser.post(rate, data={"action": "like"}, headers={"X-CSRF-Token": token})
        assert liked.status_code == 200 and _rating(node, fox) == 8.0 and "Rated 8" in liked.text


def test_a_page_of_another_host_name_is_refused(node) -> None:
    """DNS rebinding: an attacker's name re-pointed at 127.0.0.1 reaches the port, with the
    browser's cookies for it, but not the UI."""
    with logged_in(node) as browser:
        port = browser.base_url.port
        assert browser.get("/", headers={"Host": f"evil.example:{port}"}).status_code == 421
        assert browser.get("/", headers={"Host": f"localhost:{port}"}).status_code == 421
        assert browser.get("/").status_code == 200


def test_the_player_s_events_reach_the_feedback_store(node) -> None:
    with logged_in(node) as browser:
        song = item_named(browser, "song.flac")
        token = csrf_of(browser.get(f"/item/{song}").text)
        headers = {"X-CSRF-Token": token, "Content-Type": "application/json"}
        for event in ({"hash": song, "kind": "opened"}, {"hash": song, "kind": "watched", "value": 0.4}):
            assert browser.post("/events/feedback", content=json.dumps(event), headers=headers).status_code == 204
        assert browser.post("/events/feedback", content=json.dumps({"hash": song, "kind": "watched", "value": 7}), headers=headers).status_code == 400
        assert browser.post("/events/feedback", content=b"x" * 10_000, headers=headers).status_code == 400
        with sqlite3.connect(f"file:{node['data_dir'] / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
            kinds = [row[0] for row in db.execute("SELECT kind FROM feedback_events WHERE content_hash = ? ORDER BY rowid", (song,))]
        assert kinds[-2:] == ["opened", "watched"]


def test_the_grid_scrolls_page_after_page_and_status_streams_progress(node) -> None:
    with logged_in(node) as browser:
        first = browser.get("/items", params={"before": "999999999"}).text
        assert len(hashes(first)) == 6
        last_id = max(int(n) for n in re.findall(r"/items\?before=(\d+)", first) or ["0"])
        assert last_id == 0  # six items fit one page: no sentinel
        with browser.stream("GET", "/events/status") as events:
            line = next(line for line in events.iter_lines() if line.startswith("data: "))
        assert json.loads(line.removeprefix("data: "))["items"] == 6


def _rating(node: dict[str, Any], content_hash: str) -> float | None:
    with sqlite3.connect(f"file:{node['data_dir'] / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT rating FROM ratings WHERE content_hash = ?", (content_hash,)).fetchone()
    return row[0] if row else None



def test_a_share_made_in_the_ui_invites_another_node_which_joins(node, tmp_path) -> None:
    """Create a share of the library, make an open invite (text and QR code), have a second
    node join with it and search the share; revoke the grant from the page."""
    with logged_in(node) as browser:
        token = csrf_of(browser.get("/shares").text)
        headers = {"X-CSRF-Token": token}
        library_id = str(cli_json(node["data_dir"], "library", "list")[0]["id"])
        made = browser.post("/shares", data={"name": "family", "scope": "local", "permission": "members", "library": library_id}, headers=headers)
        assert made.status_code == 204 and made.headers["hx-redirect"] == "/shares/family"
        page = browser.get("/shares/family").text
        assert "members" in page and "family" in page
        invite_page = browser.post("/shares/family/invite", data={"can": ["search", "browse", "fetch"], "days": "7"}, headers=headers).text
        invite = re.search(r"<textarea[^>]*>(peerlight-invite:[^<]+)</textarea>", invite_page)
        assert invite and 'src="data:image/svg+xml;base64,' in invite_page
        downloads = tmp_path / "downloads"
        other = new_node(tmp_path / "other", f'[ui]\nport = 0\ndownloads = "{downloads}"\n')
        joiner = DaemonProcess(other)
        try:
            assert joiner.wait_ready() == "ready", joiner.stderr()
            cli_json(other, "join", invite.group(1))
            (known,) = [p for p in cli_json(other, "peers") if p.get("name") == "family"]
            assert known["granted"] and not known["refused"]
            found = cli_json(other, "search", "fox jumps over the dog", "--peers")
            assert any("fox.txt" in (r.get("name") or "") for r in found["results"])
            _browse_preview_and_fetch(other, known["peer_id"], node["library"], downloads)
            grant = cli_json(node["data_dir"], "share", "grants", "family")[0]["id"]
            revoked = browser.post(f"/shares/family/grants/{grant}/revoke", headers=headers)
            assert revoked.status_code == 204 and cli_json(node["data_dir"], "share", "grants", "family")[0]["state"] == "revoked"
        finally:
            joiner.stop()


def _browse_preview_and_fetch(data_dir: Path, peer_id: str, library: Path, downloads: Path) -> None:
    """On the joining node's UI: the peer's share, its preview of an image, and a fetch followed to the end."""
    with logged_in({"data_dir": data_dir}) as browser:
        assert peer_id in browser.get("/peers").text
        deadline = time.monotonic() + 30
        page = browser.get(f"/peers/{peer_id}")
        while "red.png" not in page.text and time.monotonic() < deadline:  # the catalog copy may still be on its way
            time.sleep(0.2)
            page = browser.get(f"/peers/{peer_id}")
        assert "red.png" in page.text and "fox.txt" in page.text
        red = re.search(r'/peers/[^/"]+/preview/([0-9a-f]{64})"', page.text).group(1)
        preview = browser.get(f"/peers/{peer_id}/preview/{red}")
        assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(preview.content)).size[0] <= 256
        token = csrf_of(page.text)
        started = browser.post(f"/peers/{peer_id}/fetch/{red}", headers={"X-CSRF-Token": token})
        assert started.status_code == 200 and "<progress" in started.text
        events = re.search(r'data-job="([^"]+)"', started.text).group(1)
        last = None
        with browser.stream("GET", events) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    last = json.loads(line.removeprefix("data: "))
        assert last is not None and last["done"] and not last["error"], last
        assert (downloads / "red.png").read_bytes() == (library / "red.png").read_bytes()


def test_pairing_offered_from_the_devices_page_shows_its_code(node) -> None:
    with logged_in(node) as browser:
        page = browser.get("/devices")
        assert page.status_code == 200 and "No device paired yet" in page.text
        offered = browser.post("/devices/pair", data={"scope": "local"}, headers={"X-CSRF-Token": csrf_of(page.text)})
        events = re.search(r'data-job="([^"]+)"', offered.text).group(1)
        with browser.stream("GET", events) as stream:
            for line in stream.iter_lines():
                event = json.loads(line.removeprefix("data: "))["event"] if line.startswith("data: ") else {}
                if event.get("code"):
                    break
        assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", event["code"]) and event["join"].startswith(event["code"] + "@/ip4/127.0.0.1/")
        port = int(re.search(r"/tcp/(\d+)/", event["join"]).group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the offer's listener is up
        job = events.rsplit("/", 1)[1]
        assert browser.post(f"/jobs/{job}/cancel", headers={"X-CSRF-Token": csrf_of(page.text)}).status_code == 204
        with browser.stream("GET", events) as stream:
            last = [json.loads(line.removeprefix("data: ")) for line in stream.iter_lines() if line.startswith("data: ")][-1]
        assert last["error"] == "cancelled"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # withdrawn: the code's listener is gone at once, not after its 5 minutes
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            except ConnectionRefusedError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the withdrawn offer still listens")
        assert browser.post(f"/jobs/{job}x/cancel", headers={"X-CSRF-Token": csrf_of(page.text)}).status_code == 404


def test_search_filters_narrow_the_results(node) -> None:
    """Stars, dates, size, library and a folder inside it: each excludes the item when it should
    and keeps it when it should; a folder climbing out with .. is ignored."""
    library_id = str(cli_json(node["data_dir"], "library", "list")[0]["id"])
    with logged_in(node) as browser:
        fox = item_named(browser, "fox.txt")

        def found(**filters: str) -> bool:
            page = browser.get("/search", params={"q": "quick brown fox", "mode": "text", **filters})
            assert page.status_code == 200, page.text[-300:]
            return fox in hashes(page.text)

        assert found()
        token = {"X-CSRF-Token": csrf_of(browser.get(f"/item/{fox}").text)}
        before = _rating(node, fox)
        try:
            assert browser.post(f"/item/{fox}/rating", data={"rating": "4"}, headers=token).status_code == 200
            assert not found(stars="4")
            assert browser.post(f"/item/{fox}/rating", data={"rating": "8"}, headers=token).status_code == 200
            assert found(stars="4") and not found(stars="5")
        finally:
            restore = {"action": "clear"} if before is None else {"rating": str(before)}
            browser.post(f"/item/{fox}/rating", data=restore, headers=token)
        assert not found(date_to="2000-01-01") and found(date_from="2000-01-01")
        assert not found(size_max="0.00001") and found(size_max="1") and not found(size_min="1")
        assert found(library=library_id) and not found(library=library_id, within="no such folder")
        assert found(library=library_id, within="../..") and found(library="999999")  # ignored, not an error
        echoed = browser.get("/search", params={"q": "fox", "date_from": "2000-01-01", "stars": "3"}).text
        assert 'value="2000-01-01"' in echoed and '<option value="3" selected>' in echoed and "<details class=\"more-filters\" open>" in echoed


def test_a_share_whose_name_holds_a_slash_is_shown_and_invited_to(node) -> None:
    with logged_in(node) as browser:
        headers = {"X-CSRF-Token": csrf_of(browser.get("/shares").text)}
        library_id = str(cli_json(node["data_dir"], "library", "list")[0]["id"])
        made = browser.post("/shares", data={"name": "trips/2024", "scope": "local", "permission": "members", "library": library_id}, headers=headers)
        assert made.headers["hx-redirect"] == "/shares/trips%2F2024"
        page = browser.get(made.headers["hx-redirect"])
        assert page.status_code == 200 and "<h1>trips/2024" in page.text
        invite = browser.post("/shares/trips%2F2024/invite", data={"can": ["search"]}, headers=headers)
        assert invite.status_code == 200 and "peerlight-invite:" in invite.text
        assert browser.get("/shares/trips").status_code == 404  # not the share's name


def test_the_status_page_lists_problem_files_and_shares(node) -> None:
    (node["library"] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert cli(node["data_dir"], "index", "--wait", timeout=120).returncode == 0
    with logged_in(node) as browser:
        page = browser.get("/status").text
        assert "broken.png" in page and 'href="/shares/local"' in page


def test_the_browser_is_never_given_the_login_link_on_its_command_line(node, tmp_path) -> None:
    """Every local user can read a process's arguments: the browser opens a 0600 page in the
    data directory that sends it on to the link."""
    record = tmp_path / "argv"
    fake = tmp_path / "browser"
    fake.write_text(f'#!/bin/sh\necho "$@" > "{record}"\n')
    fake.chmod(0o755)
    done = subprocess.run([str(PEERLIGHT), "ui", "--data-dir", str(node["data_dir"])], capture_output=True, text=True, timeout=60, env={**os.environ, "BROWSER": str(fake)})
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    argv = record.read_text()
    page = node["data_dir"] / "ui-login.html"
    assert "token" not in argv and page.as_uri() in argv
    assert (page.stat().st_mode & 0o777) == 0o600 and "/login?token=" in page.read_text()
