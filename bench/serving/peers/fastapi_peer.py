"""Peer: a plain FastAPI app doing one forward per uploaded PNG. `python -m bench.serving.peers.fastapi_peer PORT`"""

import sys
from typing import Annotated

import numpy as np
import uvicorn
from fastapi import FastAPI, File, UploadFile

from bench.serving.peers.common import answer, classify, decode_png, load_model

app = FastAPI()
model, class_names = load_model()


@app.get("/health/ready")
def ready() -> dict[str, str]:
    """What bench.harness waits for; the model is loaded before the app serves."""
    return {"status": "ready"}


@app.post("/classify")
def classify_route(file: Annotated[UploadFile, File()]) -> dict[str, object]:
    pixels = decode_png(file.file.read())
    return answer(classify(model, pixels[np.newaxis])[0], class_names)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
