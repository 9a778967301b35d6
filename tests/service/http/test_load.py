"""20,000 mixed requests at concurrency 64 against a real server with the trained models (slow; run by CI).
It prints its figures: `pytest tests/service/http/test_load.py -m slow -s`."""

import pytest

from tests.servers import TRAINED_ARTIFACTS
from tests.service.http.load import run

pytestmark = pytest.mark.slow


def test_twenty_thousand_mixed_requests_lose_and_mix_up_nothing() -> None:
    report = run(TRAINED_ARTIFACTS, total=20_000, concurrency=64)
    print(report.summary())
    assert report.requests == 20_000
    assert report.bad > 5_000 and report.good > 13_000
    assert report.server_errors == 0
    assert report.lost == 0, report.problems[:5]
    assert report.mismatched == 0, report.problems[:5]
    assert report.rss_growth < 0.05
