# sae-serve images, two targets sharing every layer but their last:
#   serve (the default): the service only: torch, FastAPI, no training packages, no compilers, no data
#   train: the service image plus the training extra (torchvision, tqdm, matplotlib), for `sae-train`
#
#   docker build -t sae-serve .                                             # torch from the default package index
#   docker build --target train -t sae-serve-train .
#   docker build --build-arg TORCH_INDEX_URL=<wheel index> -t sae-serve .   # e.g. a CPU-only or a CUDA wheel index
#
# The dependencies (torch alone is several GB) sit in their own layers, rebuilt only when pyproject.toml or a
# version changes; the project's own code is a small layer of its own, so a code change rebuilds in seconds.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS deps
ARG TORCH_VERSION=2.14.1
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml ./
# The project's dependencies without the project: install it with no code, then remove it again.
RUN touch README.md && pip install . && pip uninstall --yes sae-serve && rm -rf README.md build *.egg-info

FROM deps AS app
# The gRPC stubs are generated here from proto/ (never committed); grpcio-tools stays in this stage, out of the image.
ARG GRPCIO_TOOLS_VERSION=1.81.1
RUN pip install "grpcio-tools==${GRPCIO_TOOLS_VERSION}"
COPY README.md ./
COPY proto ./proto
COPY models ./models
COPY training ./training
COPY service ./service
RUN sh proto/generate.sh python && pip install --no-deps --prefix=/opt/app .

FROM python:${PYTHON_VERSION}-slim AS runtime
ARG PYTHON_VERSION
RUN useradd --create-home --uid 10001 sae && mkdir -p /data /artifacts && chown sae:sae /data /artifacts
COPY --from=deps /opt/venv /opt/venv
COPY --from=app /opt/app /opt/app
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

FROM runtime AS train
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=""
USER root
# pyproject.toml's `train` extra; torchvision must match torch's build, so it comes from torch's index.
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torchvision==${TORCHVISION_VERSION}" \
    && pip install --no-cache-dir "tqdm>=4.66" "matplotlib>=3.8"
ENV MPLCONFIGDIR=/tmp/matplotlib
USER sae
HEALTHCHECK NONE
CMD ["sh", "-c", "sae-train fetch --dataset all && sae-train train --dataset all --if-missing"]

FROM runtime AS serve
