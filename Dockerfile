# sae-serve images, sharing every layer they can:
#   serve (the default): the service on the CPU with ONNX Runtime, no torch, no training packages, no compilers, no data
#   serve-cuda: the service with torch, for NVIDIA GPUs (docker-compose.gpu.yml) or SAE_RUNTIME=torch
#   train: serve-cuda plus the training extra (torchvision, onnx, tqdm, matplotlib), for `sae-train`
#
#   docker build -t sae-serve .
#   docker build --target serve-cuda -t sae-serve-cuda .
#   docker build --target train -t sae-serve-train .
#   docker build --build-arg TORCH_INDEX_URL=<wheel index> --target serve-cuda -t sae-serve-cuda .   # a CUDA wheel index
#
# The service's dependencies are pinned with their hashes (requirements-serve.lock, written by `make lock` from the
# same versions as requirements.lock) and sit in their own layers, rebuilt only when the lock or a version changes;
# the project's own code is a small layer of its own, so a code change rebuilds in seconds.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements-serve.lock /tmp/
RUN pip install --require-hashes -r /tmp/requirements-serve.lock && rm /tmp/requirements-serve.lock

FROM deps AS deps-serve
# The serving image's copy, without what serving never runs: pip and setuptools (nothing is installed at run time),
# the packages' own test suites, and ONNX Runtime's model-conversion and quantisation tools.
RUN pip uninstall --yes --quiet setuptools pip \
    && site=/opt/venv/lib/python*/site-packages \
    && rm -rf $site/onnxruntime/transformers $site/onnxruntime/quantization $site/onnxruntime/tools \
    && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +

FROM deps AS deps-torch
# torch beside them (several GB with CUDA): the serve-cuda and train images only.
ARG TORCH_VERSION=2.14.1
ARG TORCH_INDEX_URL=""
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"

FROM deps AS app
# The gRPC stubs are generated here from proto/ (never committed); grpcio-tools stays in this stage, out of the image.
ARG GRPCIO_TOOLS_VERSION=1.81.1
WORKDIR /src
RUN pip install "grpcio-tools==${GRPCIO_TOOLS_VERSION}"
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY models ./models
COPY training ./training
COPY service ./service
RUN sh proto/generate.sh python && pip install --no-deps --prefix=/opt/app .

FROM python:${PYTHON_VERSION}-slim AS runtime
ARG PYTHON_VERSION
RUN useradd --create-home --uid 10001 sae && mkdir -p /data /artifacts && chown sae:sae /data /artifacts
# Bytecode is compiled at install time; a read-only root file system must not be written at run time.
ENV PATH=/opt/app/bin:/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/app/lib/python${PYTHON_VERSION}/site-packages \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SAE_HOST=0.0.0.0 \
    SAE_PORT=8000 \
    SAE_GRPC_PORT=8001 \
    SAE_ARTIFACTS_DIR=/artifacts \
    SAE_DATA_DIR=/data
USER sae
WORKDIR /home/sae
EXPOSE 8000 8001
VOLUME ["/artifacts", "/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"SAE_PORT\"]}/health/ready', timeout=2)"]
CMD ["sae-serve"]

FROM runtime AS serve-cuda
COPY --from=deps-torch /opt/venv /opt/venv
COPY --from=app /opt/app /opt/app

FROM serve-cuda AS train
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=""
USER root
# pyproject.toml's `train` extra (torch is serve-cuda's); torchvision must match torch's build, so it comes from
# torch's index.
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torchvision==${TORCHVISION_VERSION}" \
    && pip install --no-cache-dir "onnx>=1.16" "tqdm>=4.66" "matplotlib>=3.8"
ENV MPLCONFIGDIR=/tmp/matplotlib
USER sae
HEALTHCHECK NONE
CMD ["sh", "-c", "sae-train fetch --dataset all && sae-train train --dataset all --if-missing"]

# The default target, last: the service on the CPU, with ONNX Runtime and without torch.
FROM runtime AS serve
COPY --from=deps-serve /opt/venv /opt/venv
COPY --from=app /opt/app /opt/app
