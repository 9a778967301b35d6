"""The data plane on its own, with no transport: what every transport relies on."""

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from service.core.dataplane import RELOAD_OFF, REPOSITORY_OFF, Body, DataPlane, repository_version
from service.core.errors import Forbidden, NotFound, RequestTimeout, UndecodableInput
from service.core.forward import ALL_OUTPUTS, CLASSIFY, EMBED
from service.core.pixels import Batch
from service.core.versions import parse_version
from tests.service.apps import make_settings

PIXELS = np.zeros((3, 28, 28), np.uint8)


def body(pixels: Batch, parsed: object = None, inline: bool = True, delay_s: float = 0.0) -> Body[object]:
    def decode() -> tuple[Batch, object]:
        time.sleep(delay_s)
        return pixels, parsed

    return Body(pixels.nbytes, decode, inline)


def test_a_model_is_found_by_name_and_version_and_the_default_by_none(tiny_artifacts: Path) -> None:
    plane = DataPlane(make_settings(tiny_artifacts, default_model="fashion-mnist"))
    plane.repository.load()
    assert plane.model(None).name == "fashion-mnist"
    assert plane.model("mnist", "1").version == 1 and plane.model("mnist", 1).version == 1
    with pytest.raises(NotFound, match="unknown model ''"):
        plane.model("")  # a transport that sends an empty name gets no default
    with pytest.raises(NotFound, match="has no version 7"):
        plane.model("mnist", "7")
    with pytest.raises(UndecodableInput, match="not a version number"):
        plane.model("mnist", "v1")


@pytest.mark.parametrize("given", ["0", "-1", "1e3", "\u0661", "1234567890", True, 0, 2.0, [1]])
def test_one_parser_refuses_every_version_that_is_not_a_whole_number_from_1(given: object) -> None:
    with pytest.raises(UndecodableInput, match="not a version number"):
        parse_version(given)


@pytest.mark.parametrize(("given", "version"), [(None, None), ("", None), ("3", 3), (3, 3), ("007", 7)])
def test_one_parser_reads_versions_from_paths_queries_and_parameters(given: object, version: int | None) -> None:
    assert parse_version(given) == version


def test_infer_runs_the_operation_on_the_decoded_pixels_inline_or_in_a_thread(tiny_artifacts: Path) -> None:
    plane = DataPlane(make_settings(tiny_artifacts))

    async def run() -> None:
        async with plane.serving():
            served = plane.model("mnist")

            async def read(inline: bool) -> Body[object]:
                return body(PIXELS, parsed="the transport's own", inline=inline)

            for inline in (True, False):
                parsed, result = await plane.infer(served, CLASSIFY, lambda inline=inline: read(inline))
                assert parsed == "the transport's own" and result.probabilities.shape == (3, 10)
            _, embeddings = await plane.infer(served, EMBED[1], lambda: read(True))
            assert embeddings.vectors.shape == (3, 400) and embeddings.in_distribution.shape == (3,)
            _, outputs = await plane.infer(served, ALL_OUTPUTS, lambda: read(True))
            np.testing.assert_allclose(outputs.probabilities.sum(1), 1, rtol=1e-5)

    asyncio.run(run())


def test_infer_is_refused_once_the_timeout_has_passed_reading_included(tiny_artifacts: Path) -> None:
    plane = DataPlane(make_settings(tiny_artifacts, request_timeout_s=0.1))

    async def run() -> None:
        async with plane.serving():

            async def slow_read() -> Body[object]:
                await asyncio.sleep(1)
                return body(PIXELS)

            with pytest.raises(RequestTimeout, match="SAE_REQUEST_TIMEOUT_S"):
                await plane.infer(plane.model("mnist"), CLASSIFY, slow_read)

    asyncio.run(run())


def test_the_repository_is_an_admin_api_off_without_keys(tiny_artifacts: Path) -> None:
    plane = DataPlane(make_settings(tiny_artifacts))
    plane.repository.load()
    for refusal in (REPOSITORY_OFF, RELOAD_OFF):
        with pytest.raises(Forbidden, match="set SAE_API_KEYS"):
            plane.admin(refusal)
    keyed = DataPlane(make_settings(tiny_artifacts, api_keys="admin"))
    keyed.repository.load()
    assert {(e["name"], e["state"]) for e in keyed.admin(REPOSITORY_OFF).index(ready_only=True)} == {
        ("mnist", "READY"),
        ("fashion-mnist", "READY"),
    }


def test_a_repository_call_takes_only_the_version_parameter() -> None:
    assert repository_version({"version": "2"}) == 2 and repository_version({}) is None
    assert repository_version({"unload_dependents": True}, frozenset({"unload_dependents"})) is None
    with pytest.raises(UndecodableInput, match="unknown parameters \\['force'\\]"):
        repository_version({"force": True})
    with pytest.raises(UndecodableInput, match="'version' is empty"):
        repository_version({"version": ""})  # a blank, not the whole model


def test_the_batchers_exist_only_while_the_plane_serves(tiny_artifacts: Path) -> None:
    plane = DataPlane(make_settings(tiny_artifacts))
    with pytest.raises(RuntimeError, match="not serving"):
        plane.batchers  # noqa: B018

    async def run() -> None:
        async with plane.serving():
            assert plane.batchers is not None

    asyncio.run(run())
    with pytest.raises(RuntimeError, match="not serving"):
        plane.batchers  # noqa: B018
