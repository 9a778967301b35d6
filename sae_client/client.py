"""Typed httpx client. Requests are built and answers read by shared functions; only the I/O differs."""

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote, unquote

import httpx
import numpy as np
from numpy.typing import NDArray
from PIL import Image

ImageLike = str | os.PathLike[str] | bytes | Image.Image | NDArray[Any]
Images = ImageLike | Sequence[ImageLike]
Http = TypeVar("Http", httpx.Client, httpx.AsyncClient)


@dataclass(frozen=True)
class Reconstructions:
    """The reconstructions of the images sent, and which model version made them."""

    pixels: NDArray[np.uint8]  # (N, 28, 28), or (28, 28) for one image
    reconstruction_error: NDArray[np.float32] | float  # (N,), or a float for one image
    model_version: int


@dataclass(frozen=True)
class Embeddings:
    """The codes of the images sent, and which model version computed them."""

    embeddings: NDArray[np.float32]  # (N, dim), or (dim,) for one image
    layer: int
    model_version: int


@dataclass(frozen=True)
class ReferenceImage:
    """One image of a model's reference set, as /similar's neighbours name it."""

    pixels: NDArray[np.uint8]  # (28, 28)
    label: int
    class_name: str
    model_version: int


class SAEError(Exception):
    """The service refused a request: its status code and its `detail`."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code, self.detail = status_code, detail


def _as_list(images: Images) -> tuple[list[ImageLike], bool]:
    """The images as a list, and whether a single image was given."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return list(images), False
    if isinstance(images, (str, os.PathLike, bytes, Image.Image, np.ndarray)):
        return [images], True
    return list(images), False


def _png(image: Image.Image | NDArray[Any]) -> bytes:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)  # floats are taken as 0-1
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _file_bytes(image: ImageLike) -> bytes:
    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    return _png(image)


def _request_body(images: list[ImageLike], accept: str | None = None) -> dict[str, Any]:
    """httpx arguments: 28x28 uint8 arrays travel as raw pixels, anything else as image files."""
    headers = {"Accept": accept} if accept else {}
    if all(isinstance(i, np.ndarray) and i.shape == (28, 28) and i.dtype == np.uint8 for i in images):
        pixels = np.stack([np.asarray(i) for i in images])
        headers["Content-Type"] = "application/octet-stream"
        return {"content": pixels.tobytes(), "headers": headers}
    files = [("file", (f"image{i}", _file_bytes(image))) for i, image in enumerate(images)]
    return {"files": files, "headers": headers}


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = str(response.json()["detail"])
        except (ValueError, KeyError, TypeError):
            detail = response.text[:500]
        raise SAEError(response.status_code, detail)
    return response


def _params(model: str | None, resize: bool, **extra: Any) -> dict[str, Any]:
    params = {k: v for k, v in extra.items() if v is not None}
    if model is not None:
        params["model"] = model
    if resize:
        params["resize"] = "true"
    return params


def _prepare(
    operation: str, images: Images, model: str | None, resize: bool, accept: str | None = None, **params: Any
) -> tuple[str, dict[str, Any], bool]:
    """Path, httpx arguments, and whether one image was given, for one of the operations on images."""
    batch, single = _as_list(images)
    return f"/{operation}", {"params": _params(model, resize, **params), **_request_body(batch, accept)}, single


def _predictions(response: httpx.Response, single: bool) -> Any:
    answer = response.json()
    predictions = [{**p, "model_version": answer["model_version"]} for p in answer["predictions"]]
    return predictions[0] if single else predictions


def _reconstructions(response: httpx.Response, single: bool) -> Reconstructions:
    answer = response.json()
    items = answer["reconstructions"]
    pixels = np.array([r["pixels"] for r in items], dtype=np.uint8)
    errors = np.array([r["reconstruction_error"] for r in items], dtype=np.float32)
    if single:
        return Reconstructions(pixels[0], float(errors[0]), answer["model_version"])
    return Reconstructions(pixels, errors, answer["model_version"])


def _similar(response: httpx.Response, single: bool) -> Any:
    answer = response.json()
    results = [{**r, "model_version": answer["model_version"], "metric": answer["metric"]} for r in answer["results"]]
    return results[0] if single else results


def _reference_path(index: int, model: str | None, version: int | None) -> tuple[str, dict[str, Any]]:
    if model is None:
        raise ValueError("reference_image needs the model: pass model= or give the client a default model")
    return f"/reference/{quote(model, safe='')}/{int(index)}.png", _params(None, False, version=version)


def _reference_image(response: httpx.Response) -> ReferenceImage:
    pixels = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"), dtype=np.uint8)
    headers = response.headers
    return ReferenceImage(
        pixels, int(headers["x-label"]), unquote(headers["x-class-name"]), int(headers["x-model-version"])
    )


def _embeddings(response: httpx.Response, single: bool, layer: int) -> Embeddings:
    array: NDArray[np.float32] = np.load(io.BytesIO(response.content), allow_pickle=False)
    return Embeddings(array[0] if single else array, layer, int(response.headers["x-model-version"]))


class _Base(ABC, Generic[Http]):
    """What both clients are made of: a default model and an httpx client with key, timeout and retries."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        model: str | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport` replaces httpx's network transport (and its retries), e.g. with an httpx.MockTransport."""
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        options = {"base_url": base_url, "headers": headers, "timeout": timeout}
        if transport is not None and not isinstance(transport, self.transport_kind):
            raise TypeError(
                f"{type(self).__name__} needs {self.transport_kind.__name__}, got {type(transport).__name__}"
            )
        self._http: Http = self._connect(options, retries, transport)

    transport_kind: type[httpx.BaseTransport] | type[httpx.AsyncBaseTransport]

    @abstractmethod
    def _connect(self, options: dict[str, Any], retries: int, transport: Any) -> Http:
        """The httpx client on `transport`, else on the network, retrying connection failures `retries` times."""


class Client(_Base[httpx.Client]):
    """Blocking client. Connection failures are retried `retries` times; refusals raise SAEError."""

    transport_kind = httpx.BaseTransport

    def _connect(self, options: dict[str, Any], retries: int, transport: Any) -> httpx.Client:
        return httpx.Client(**options, transport=transport or httpx.HTTPTransport(retries=retries))

    def classify(
        self,
        images: Images,
        model: str | None = None,
        top_k: int = 3,
        resize: bool = False,
        min_confidence: float | None = None,
        version: int | None = None,
    ) -> Any:
        """A prediction dict per image (one dict for one image), with the `model_version` that answered;
        `abstained` is true where the top probability is under `min_confidence`; `version` pins a model version
        (default: the newest loaded), here and in the other calls."""
        path, kwargs, single = _prepare(
            "classify", images, model or self.model, resize, top_k=top_k, min_confidence=min_confidence, version=version
        )
        return _predictions(_checked(self._http.post(path, **kwargs)), single)

    def reconstruct(
        self, images: Images, model: str | None = None, resize: bool = False, version: int | None = None
    ) -> Reconstructions:
        """Reconstructed uint8 pixels, (N, 28, 28) or (28, 28), their errors, and the model version."""
        path, kwargs, single = _prepare(
            "reconstruct", images, model or self.model, resize, "application/json", version=version
        )
        return _reconstructions(_checked(self._http.post(path, **kwargs)), single)

    def embed(
        self, images: Images, model: str | None = None, layer: int = 2, resize: bool = False, version: int | None = None
    ) -> Embeddings:
        """float32 codes, (N, dim) or (dim,), their layer, and the model version."""
        path, kwargs, single = _prepare(
            "embed", images, model or self.model, resize, "application/x-npy", layer=layer, version=version
        )
        return _embeddings(_checked(self._http.post(path, **kwargs)), single, layer)

    def similar(
        self, images: Images, model: str | None = None, k: int = 10, resize: bool = False, version: int | None = None
    ) -> Any:
        """A dict per image (one dict for one image): the classifier's `label` and `class_name`, the `neighbours`
        (the k nearest reference images: index, label, class_name, similarity, distance, image path) and their
        `vote`, with `model_version` and the `metric` the similarities are of."""
        path, kwargs, single = _prepare("similar", images, model or self.model, resize, k=k, version=version)
        return _similar(_checked(self._http.post(path, **kwargs)), single)

    def reference_image(self, index: int, model: str | None = None, version: int | None = None) -> ReferenceImage:
        """The reference image a neighbour's `index` names: its pixels, label and class name."""
        path, params = _reference_path(index, model or self.model, version)
        return _reference_image(_checked(self._http.get(path, params=params)))

    def models(self) -> list[dict[str, Any]]:
        return list(_checked(self._http.get("/models")).json()["models"])

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class AsyncClient(_Base[httpx.AsyncClient]):
    """The same calls for asyncio code."""

    transport_kind = httpx.AsyncBaseTransport

    def _connect(self, options: dict[str, Any], retries: int, transport: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options, transport=transport or httpx.AsyncHTTPTransport(retries=retries))

    async def classify(
        self,
        images: Images,
        model: str | None = None,
        top_k: int = 3,
        resize: bool = False,
        min_confidence: float | None = None,
        version: int | None = None,
    ) -> Any:
        path, kwargs, single = _prepare(
            "classify", images, model or self.model, resize, top_k=top_k, min_confidence=min_confidence, version=version
        )
        return _predictions(_checked(await self._http.post(path, **kwargs)), single)

    async def reconstruct(
        self, images: Images, model: str | None = None, resize: bool = False, version: int | None = None
    ) -> Reconstructions:
        """Reconstructed uint8 pixels, (N, 28, 28) or (28, 28), their errors, and the model version."""
        path, kwargs, single = _prepare(
            "reconstruct", images, model or self.model, resize, "application/json", version=version
        )
        return _reconstructions(_checked(await self._http.post(path, **kwargs)), single)

    async def embed(
        self, images: Images, model: str | None = None, layer: int = 2, resize: bool = False, version: int | None = None
    ) -> Embeddings:
        """float32 codes, (N, dim) or (dim,), their layer, and the model version."""
        path, kwargs, single = _prepare(
            "embed", images, model or self.model, resize, "application/x-npy", layer=layer, version=version
        )
        return _embeddings(_checked(await self._http.post(path, **kwargs)), single, layer)

    async def similar(
        self, images: Images, model: str | None = None, k: int = 10, resize: bool = False, version: int | None = None
    ) -> Any:
        path, kwargs, single = _prepare("similar", images, model or self.model, resize, k=k, version=version)
        return _similar(_checked(await self._http.post(path, **kwargs)), single)

    async def reference_image(self, index: int, model: str | None = None, version: int | None = None) -> ReferenceImage:
        path, params = _reference_path(index, model or self.model, version)
        return _reference_image(_checked(await self._http.get(path, params=params)))

    async def models(self) -> list[dict[str, Any]]:
        return list(_checked(await self._http.get("/models")).json()["models"])

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()
