"""docs/samples/ holds the real test images that docs/samples/make_samples.py names (slow: real data)."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.docs.scripts import DOCS, load_script
from training.data import load_dataset

pytestmark = pytest.mark.slow
SAMPLES = DOCS / "samples"


def test_each_sample_is_its_test_image_named_after_its_class() -> None:
    make_samples = load_script(SAMPLES / "make_samples.py")
    for position, (dataset, index) in enumerate(make_samples.SAMPLES):
        data = load_dataset(dataset)
        expected = data.test_images[index].numpy()
        name = make_samples.sample_name(dataset, data.class_names[int(data.test_labels[index])])
        with Image.open(SAMPLES / f"{name}.png") as image:
            assert image.mode == "L" and image.size == (28, 28), name
            np.testing.assert_array_equal(np.asarray(image), expected, err_msg=name)
        if position == 0:
            request = json.loads((SAMPLES / f"infer-{name}.json").read_text())
            assert request["inputs"][0]["data"] == expected.reshape(-1).tolist()
