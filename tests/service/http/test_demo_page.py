"""The browser demo in a real headless Chromium (Debian's), driven by Playwright (slow)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from models import SAEConfig, StackedAutoencoder, save_checkpoint
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.checkpoints import make_card
from tests.servers import require_trained_artifacts, start_server

pytestmark = pytest.mark.slow
NO_BROKEN_IMAGES = "[...document.images].every((image) => image.complete && image.naturalWidth > 0)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The trained models, a third one no page could know of, and a default other than the first listed."""
    artifacts, trained = tmp_path_factory.mktemp("artifacts"), require_trained_artifacts()
    for name in ("mnist", "fashion-mnist"):
        (artifacts / name).symlink_to((trained / name).resolve())
    save_checkpoint(
        StackedAutoencoder(SAEConfig(num_classes=3)), make_card("shapes", ["a", "b", "c"]), artifacts / "shapes"
    )
    process, url = start_server(artifacts, SAE_DEFAULT_MODEL="fashion-mnist")
    yield url
    process.terminate()
    process.wait(timeout=20)


def options(page: Page) -> tuple[list[str], str]:
    """The model list the page shows, and the model chosen."""
    names = page.eval_on_selector_all("#model option", "(options) => options.map((option) => option.value)")
    return names, page.input_value("#model")


def test_the_served_models_listed_a_one_drawn_answered_and_cleared(server: str, tmp_path: Path) -> None:
    screenshot = Path(os.environ.get("SAE_DEMO_SCREENSHOT", tmp_path / "demo.png"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 620})
        page.goto(server + "/")
        page.wait_for_function("document.querySelectorAll('#model option').length > 0", timeout=15000)
        assert options(page) == (["fashion-mnist", "mnist", "shapes"], "fashion-mnist")
        page.wait_for_function(NO_BROKEN_IMAGES, timeout=5000)
        page.select_option("#model", "mnist")
        page.click("#classify")  # the empty pad: a blank image, flagged
        page.wait_for_function("document.getElementById('distribution').textContent.length > 0", timeout=15000)
        blank_pad = page.text_content("#distribution") or ""
        page.click("#clear")
        page.wait_for_function("document.getElementById('prediction').textContent === ''", timeout=5000)
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
        page.click("#clear")
        page.wait_for_function("document.getElementById('reconstruction').naturalWidth === 1", timeout=5000)
        cleared = {
            selector: page.text_content(selector) for selector in ("#prediction", "#bars", "#error", "#distribution")
        }
        pad_black = page.evaluate(
            "[...document.getElementById('pad').getContext('2d').getImageData(0, 0, 280, 280).data]"
            ".every((value, i) => i % 4 === 3 || value === 0)"
        )
        blank = page.evaluate(NO_BROKEN_IMAGES + " && [...document.images].every((image) => image.naturalWidth === 1)")
        chosen = options(page)[1]
        browser.close()
    assert status == ""
    assert prediction.startswith("1 ("), prediction
    assert bars == 10
    assert error_text.startswith("reconstruction error 0.")
    assert distribution in ("looks like a digit", "does not look like a digit: the label is a guess")
    assert blank_pad == "does not look like a digit: the label is a guess"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cleared == {"#prediction": "", "#bars": "", "#error": "", "#distribution": ""}
    assert pad_black and blank and chosen == "mnist"
