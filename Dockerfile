# syntax=docker/dockerfile:1
# sae-serve image. Build stage makes a virtual environment with the same install step as `make install`;
# the final stage copies only that environment onto a slim base: no compilers, no pip cache.
#   docker build -t sae-serve .                                   # torch from the default package index
#   docker build --build-arg TORCH_INDEX_URL=<wheel index> ...    # e.g. PyTorch's CPU-only or a CUDA wheel index
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY training ./training
COPY service ./service
RUN pip install .

FROM python:${PYTHON_VERSION}-slim
RUN useradd --create-home --uid 10001 sae && mkdir -p /data /artifacts && chown sae:sae /data /artifacts
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SAE_HOST=0.0.0.0 \
    SAE_PORT=8000 \
    SAE_ARTIFACTS_DIR=/artifacts \
    SAE_DATA_DIR=/data
USER sae
WORKDIR /home/sae
EXPOSE 8000
VOLUME ["/artifacts", "/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"SAE_PORT\"]}/health/ready', timeout=2)"]
CMD ["sae-serve"]
