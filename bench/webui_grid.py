"""The web UI's library grid with 10,000 items, measured in a real browser's performance timeline.

A node indexes 10,000 short notes (a real daemon, a real catalog); Debian's chromium, driven by
Playwright, logs in and opens the grid. From the browser's own timeline: first contentful
paint and the load event of the grid page, then the time from scrolling to the end of the
grid to the next page's cards being in the document, page after page, and the longest
frame while scrolling (responsiveness). The baseline, in the same browser and run: the very
same HTML the daemon sent, opened from a file (no server, no catalog), so the ratio is what
serving it from the daemon costs. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import emit, median, percentile  # noqa: E402

FRAME_PROBE = """async (seconds) => {
  // Scroll steadily for a while and record every frame's duration (requestAnimationFrame).
  const frames = [];
  let last = performance.now();
  const end = last + seconds * 1000;
  await new Promise((done) => {
    function step(now) {
      frames.push(now - last); last = now;
      window.scrollBy(0, 400);
      if (now < end) requestAnimationFrame(step); else done();
    }
    requestAnimationFrame(step);
  });
  return frames;
}"""


def paint_times(page) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """First contentful paint and load end of the page now shown; the paint entry may land just
    after the load event, so it is waited for (up to 5 s)."""
    deadline = time.perf_counter() + 5
    while True:
        timing = page.evaluate(
            "() => ({fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,"
            " load: performance.getEntriesByType('navigation')[0].loadEventEnd})"
        )
        if timing["fcp"] is not None or time.perf_counter() > deadline:
            return {key: float(value) for key, value in timing.items() if value is not None}
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=20, help="grid pages scrolled through")
    parser.add_argument("--repeats", type=int, default=5, help="cold loads of the grid measured")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from playwright.sync_api import sync_playwright

    from tests.helpers import DaemonProcess, cli, cli_json, new_node

    browser_path = os.environ.get("PEERLIGHT_BROWSER") or shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise SystemExit("no chromium: apt-get install chromium (or set PEERLIGHT_BROWSER)")
    root = Path(tempfile.mkdtemp(prefix="peerlight-grid-"))
    library = root / "library"
    library.mkdir()
    for n in range(args.items):
        (library / f"note-{n:05}.txt").write_text(f"Note {n}: about subject {n % 97} and place {n % 89}.\n")
    data_dir = new_node(root / "node")
    daemon = DaemonProcess(data_dir)
    try:
        assert daemon.wait_ready() == "ready", daemon.stderr()
        cli_json(data_dir, "library", "add", str(library))
        started = time.perf_counter()
        assert cli(data_dir, "index", "--wait", timeout=3600).returncode == 0
        print(f"{args.items} items indexed in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            link = cli_json(data_dir, "ui", "--no-browser")
            context = browser.new_context()
            page = context.new_page()
            page.goto(link["url"])
            served, static = [], []
            html_file = root / "grid.html"
            for _ in range(args.repeats):
                page.goto(link["address"] + "/", wait_until="load")
                served.append(paint_times(page))
                html_file.write_text(page.content())
                page.goto(html_file.as_uri(), wait_until="load")  # the same document, no server
                static.append(paint_times(page))
            page.goto(link["address"] + "/", wait_until="networkidle")
            cards = page.locator(".grid .card")
            next_page_ms = []
            for n in range(1, args.pages + 1):
                t0 = time.perf_counter()
                page.locator(".more").scroll_into_view_if_needed()
                cards.nth(60 * n).wait_for()
                next_page_ms.append((time.perf_counter() - t0) * 1000)
            frames = page.evaluate(FRAME_PROBE, 3)
            browser.close()
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    fcp = [s["fcp"] for s in served if "fcp" in s]
    fcp_static = [s["fcp"] for s in static if "fcp" in s]
    emit(
        "webui_grid",
        items=args.items,
        first_paint_ms_median=round(median(fcp), 1),
        first_paint_ms_max=round(max(fcp), 1),
        load_ms_median=round(median([s["load"] for s in served]), 1),
        static_first_paint_ms_median=round(median(fcp_static), 1),
        first_paint_vs_static=round(median(fcp) / median(fcp_static), 2),
        next_page_ms_median=round(median(next_page_ms), 1),
        next_page_ms_p90=round(percentile(next_page_ms, 90), 1),
        pages_scrolled=args.pages,
        frame_ms_median=round(median(frames), 1),
        frame_ms_p99=round(percentile(frames, 99), 1),
        frame_ms_max=round(max(frames), 1),
        cards_in_document=60 * (args.pages + 1),
    )


if __name__ == "__main__":
    main()
