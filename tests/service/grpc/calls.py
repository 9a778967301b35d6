"""Calls to a real server's gRPC port through tritonclient: the images input, the outputs asked for, and the
status of a call that must fail."""

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

TIMEOUT_S = 30  # every call's client timeout, so that no test can hang


def images_input(images: np.ndarray, datatype: str = "UINT8") -> triton.InferInput:
    tensor = triton.InferInput("images", list(images.shape), datatype)
    tensor.set_data_from_numpy(images)
    return tensor


def outputs(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name) for name in names]


def refusal(call: object, *args: object, **kwargs: object) -> tuple[str, str]:
    """The status code and message of a call that must fail."""
    with pytest.raises(InferenceServerException) as caught:
        call(*args, client_timeout=TIMEOUT_S, **kwargs)  # type: ignore[operator]
    return str(caught.value.status()).removeprefix("StatusCode."), caught.value.message()
