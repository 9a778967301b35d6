"""Write the sample images the README's quickstart posts: real test images of MNIST and Fashion-MNIST.

Each is a 28x28 grayscale PNG of one image of the data set's test split, named after its class, plus one
Open Inference Protocol request (JSON) carrying the first MNIST sample's pixels. Run from the repository
root once the data is fetched (`make data`):

    .venv/bin/python docs/samples/make_samples.py
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from training.data import load_dataset

# (data set, index in its test split): MNIST test images 0, 1 and 2 are a 7, a 2 and a 1; Fashion-MNIST test
# images 0 and 1 are an ankle boot and a pullover.
SAMPLES = (("mnist", 0), ("mnist", 1), ("mnist", 2), ("fashion-mnist", 0), ("fashion-mnist", 1))
OUT_DIR = Path(__file__).resolve().parent


def sample_name(dataset: str, class_name: str) -> str:
    """digit-7 for MNIST's 7, ankle-boot for Fashion-MNIST's "Ankle boot", t-shirt-top for "T-shirt/top"."""
    slug = "-".join(class_name.lower().replace("/", " ").split())
    return f"digit-{slug}" if dataset == "mnist" else slug


def infer_request(pixels: np.ndarray) -> dict[str, object]:
    """An Open Inference Protocol request for one image, asking for three outputs and abstaining under 0.9."""
    return {
        "inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8", "data": pixels.reshape(-1).tolist()}],
        "outputs": [{"name": "label"}, {"name": "probabilities"}, {"name": "abstained"}],
        "parameters": {"min_confidence": 0.9},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="the data folder (default: SAE_DATA_DIR or ./data)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where the samples go (default: this folder)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = {name: load_dataset(name, args.data_dir) for name in dict.fromkeys(d for d, _ in SAMPLES)}
    written = []
    for position, (dataset, index) in enumerate(SAMPLES):
        data = datasets[dataset]
        pixels = data.test_images[index].numpy()  # (28, 28) uint8, white on black
        name = sample_name(dataset, data.class_names[int(data.test_labels[index])])
        Image.fromarray(pixels).save(args.out / f"{name}.png", optimize=True)
        written.append(f"{name}.png ({dataset} test image {index})")
        if position == 0:  # the quickstart's Open Inference Protocol request carries the first sample
            request = json.dumps(infer_request(pixels), separators=(",", ":"))
            (args.out / f"infer-{name}.json").write_text(request + "\n")
            written.append(f"infer-{name}.json")
    print("wrote", ", ".join(written), "to", args.out)


if __name__ == "__main__":
    main()
