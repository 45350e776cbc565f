"""report.html in a real browser (headless Chromium through Playwright): every picture decodes,
no request leaves the page, user-controlled text stays text; a screenshot is saved.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package (dev extra):
without them the test skips with the reason, except under CI (``CI`` set), where it fails.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.report.test_report_model import HOSTILE, _report, row
from tests.report.test_report_run import runs  # noqa: F401  (the module's runs fixture)

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    """The Chromium executable, or skip (fail under CI) saying what is missing."""
    found = os.environ.get("EXPLAIN_AUDIT_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    problem = None
    if found is None:
        problem = "no Chromium found (apt-get install chromium, or set EXPLAIN_AUDIT_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing (pip install -e '.[dev]')"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the browser test cannot run: {problem}")
        pytest.skip(problem)
    return found


def _open(browser_path: str, pages: list[Path], screenshot: Path) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
        try:
            for page_path in pages:
                url = page_path.resolve().as_uri()
                context = browser.new_context(viewport={"width": 1300, "height": 900})
                left = []
                # anything but the page itself is a request that left it (data: URIs are none);
                # network schemes are also aborted, so nothing is fetched even if one is made
                context.route(re.compile(r"^(https?|wss?|ftp)://"), lambda r: r.abort())
                page = context.new_page()
                dialogs = []
                page.on("request", lambda r, url=url, left=left: None if r.url == url or r.url.startswith("data:")
                        else left.append(r.url))
                page.on("dialog", lambda d, dialogs=dialogs: (dialogs.append(d.message), d.dismiss()))
                page.goto(url, wait_until="load")
                images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
                text = page.evaluate("document.body.innerText")
                planted = page.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror]').length")
                if page_path == pages[0]:
                    page.screenshot(path=str(screenshot), full_page=True)
                out.append({"images": images, "left": left, "text": text, "planted": planted, "dialogs": dialogs})
                context.close()
        finally:
            browser.close()
    return out


@pytest.mark.slow
def test_report_html_in_headless_chromium(runs, tmp_path):  # noqa: F811
    browser_path = _browser()
    hostile = tmp_path / "hostile.html"
    from audit.report.html import render_html

    hostile.write_text(render_html(_report([row("noise", HOSTILE, "spearman", 0.5, 0.4, 0.6)],
                                           class_names=[HOSTILE])))
    screenshot = Path(os.environ.get("EXPLAIN_AUDIT_SCREENSHOT_DIR", tmp_path)) / "report.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    report, attack = _open(browser_path, [runs["seed0"] / "report.html", hostile], screenshot)
    # the run's pictures: heatmap grids and the AOPC curves, every one decoded
    assert len(report["images"]) >= 2
    assert all(complete and width > 0 for complete, width in report["images"]), report["images"]
    assert report["left"] == [] and attack["left"] == []
    assert "PASS" in report["text"] or "FAIL" in report["text"]
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
    # a hostile id or class name is text on the page, never an element or a script
    assert HOSTILE in attack["text"] and attack["planted"] == 0 and attack["dialogs"] == []
