"""/docs and /redoc in a real headless Chromium with every address but the service's cut off (slow)."""

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Route, sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.checkpoints import write_tiny_artifacts
from tests.servers import start_server

pytestmark = pytest.mark.slow
UPLOAD_EXAMPLE = "curl -F file=@docs/samples/digit-7.png -F file=@docs/samples/digit-2.png http://127.0.0.1:8000"
# The routes that take image files, with their tag: each shows the multipart body's example once.
IMAGE_ROUTES = [
    ("inference", "classify"),
    ("inference", "reconstruct"),
    ("inference", "embed"),
    ("neighbours", "similar"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_server(write_tiny_artifacts(tmp_path_factory.mktemp("artifacts")))
    yield url
    process.terminate()
    process.wait(timeout=20)


def operations(server: str) -> list[str]:
    spec = httpx.get(f"{server}/openapi.json").json()
    return [f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item]


@pytest.mark.parametrize("page_path", ["/docs", "/redoc"])
def test_the_docs_list_every_operation_with_no_internet(server: str, page_path: str, tmp_path: Path) -> None:
    expected = operations(server)
    outside: list[str] = []

    def only_the_service(route: Route) -> None:
        if route.request.url.startswith(server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", only_the_service)
        page.goto(server + page_path)
        if page_path == "/docs":
            page.wait_for_selector(".opblock", timeout=20000)
            shown = [
                f"{block.locator('.opblock-summary-method').inner_text().strip()} "
                f"{block.locator('.opblock-summary-path').inner_text().strip()}"
                for block in page.locator(".opblock").all()
            ]
        else:
            page.wait_for_selector("[data-section-id^='operation/']", timeout=20000)
            shown = [
                f"{element.locator('span').first.inner_text().strip().upper()} "
                for element in page.locator("[data-section-id^='operation/']").all()
            ]
        page.screenshot(path=str(Path(os.environ.get("SAE_DOCS_SCREENSHOTS", tmp_path)) / f"{page_path[1:]}.png"))
        if page_path == "/docs":  # Swagger UI shows an operation's request body once it is opened
            for tag, operation in IMAGE_ROUTES:
                page.click(f"#operations-{tag}-{operation}_{operation}_post .opblock-summary")
        wanted = len(IMAGE_ROUTES) + 1
        page.wait_for_function(f"document.body.innerText.split({UPLOAD_EXAMPLE!r}).length === {wanted}", timeout=10000)
        uploads = re.findall(re.escape(UPLOAD_EXAMPLE) + r"(/\w+)", page.inner_text("body"))
        browser.close()
    # ReDoc's own "powered by" footer logo comes from Redocly's host; offline it stays blank, nothing else does.
    assert [url for url in outside if not url.endswith("/redoc/logo-mini.svg")] == [], outside
    if page_path == "/docs":
        assert sorted(s.replace("\u200b", "") for s in shown) == sorted(expected)
    else:
        assert len(shown) == len(expected)
    assert sorted(uploads) == sorted(f"/{operation}" for _, operation in IMAGE_ROUTES)  # the example, per route
