"""The browser demo in a real headless Chromium (Debian's), driven by Playwright (slow)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.servers import TRAINED_ARTIFACTS, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    process, url = start_server(TRAINED_ARTIFACTS)
    yield url
    process.terminate()
    process.wait(timeout=20)


def test_drawing_a_one_gets_a_prediction_and_a_reconstruction(server: str, tmp_path: Path) -> None:
    screenshot = Path(os.environ.get("SAE_DEMO_SCREENSHOT", tmp_path / "demo.png"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 620})
        page.goto(server + "/")
        box = page.locator("#pad").bounding_box()
        assert box is not None
        x, top = box["x"] + box["width"] / 2, box["y"] + 40
        page.mouse.move(x - 20, top + 30)  # a short flag, then the down stroke of a '1'
        page.mouse.down()
        page.mouse.move(x, top, steps=5)
        page.mouse.move(x, top + 200, steps=20)
        page.mouse.up()
        page.click("#classify")
        page.wait_for_function("document.getElementById('prediction').textContent.length > 0", timeout=15000)
        page.wait_for_function("document.getElementById('reconstruction').naturalWidth === 28", timeout=15000)
        prediction = page.text_content("#prediction") or ""
        bars = page.locator(".bar").count()
        error_text = page.text_content("#error") or ""
        distribution = page.text_content("#distribution") or ""
        status = page.text_content("#status") or ""
        page.screenshot(path=str(screenshot))
        browser.close()
    assert status == ""
    assert prediction.startswith("1 ("), prediction
    assert bars == 10
    assert error_text.startswith("reconstruction error 0.")
    assert distribution in ("looks like the training data", "does not look like the training data")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
