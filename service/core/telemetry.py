"""Prometheus metrics, the access log and request ids: what every transport records of each call."""

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, multiprocess

from service.core.timing import forward_timing

REQUEST_ID_HEADER = "x-request-id"
access_log = logging.getLogger("sae_serve.access")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class ServiceMetrics:
    """One registry per app, so that several apps in one process (tests) do not share counters.

    Under several worker processes (`multiprocess_dir`, set up by `sae-serve`), each worker writes its
    values to files in that folder and /metrics sums them over all workers, those that died included.
    """

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        if self.multiprocess_dir is None:  # one process's memory would misreport several workers
            ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu seconds, open fds
        self.requests = Counter(
            "sae_requests", "HTTP requests answered", ["route", "model", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "sae_request_duration_seconds", "time to answer", ["route"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.grpc_requests = Counter(
            "sae_grpc_requests", "gRPC calls answered", ["method", "model", "code"], registry=self.registry
        )
        self.grpc_latency = Histogram(
            "sae_grpc_request_duration_seconds",
            "time to answer a gRPC call",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_images = Histogram(
            "sae_batch_images",
            "images per forward pass",
            ["model", "operation"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "sae_batch_queue_wait_seconds",
            "wait of a batch's first request before its forward pass",
            ["model", "operation"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.compute = Histogram(
            "sae_batch_compute_seconds",
            "time of a forward pass, queue excluded",
            ["model", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_refusals = Counter(
            "sae_queue_refusals",
            "requests refused at once because the model's queue was full",
            ["model"],
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "sae_model_loaded",
            "1 if the model serves",
            ["model", "device"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

    def batch_observer(self, model: str, operation: str) -> Callable[[int, float, float], None]:
        size = self.batch_images.labels(model, operation)
        wait = self.queue_wait.labels(model, operation)
        compute = self.compute.labels(model, operation)

        def observe(images: int, waited: float, computed: float) -> None:
            size.observe(images)
            wait.observe(waited)
            compute.observe(computed)

        return observe

    def exported(self) -> CollectorRegistry:
        """The registry /metrics renders: this process's, or the sum over every worker's files."""
        if self.multiprocess_dir is None:
            return self.registry
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return summed

    def set_models(self, loaded: dict[str, str], known: list[str]) -> None:
        if self.multiprocess_dir is None:  # files keep every label a worker ever set
            self.model_loaded.clear()
        for name in known:
            self.model_loaded.labels(name, loaded.get(name, "none")).set(1 if name in loaded else 0)


def request_id_from(given: str) -> str:
    """The client's request id when it sent a printable one (128 characters at most), else a new one."""
    return given[:128] if given.isprintable() and given else uuid.uuid4().hex


def log_access(request_id: str, method: str, route: str, model: str, status: int | str, seconds: float) -> None:
    """The access line of one request or call: one format for every transport."""
    access_log.info(
        "%s %s %s",
        method,
        route,
        status,
        extra={
            "request_id": request_id,
            "method": method,
            "route": route,
            "model": model,
            "status": status,
            "duration_ms": round(1000 * seconds, 3),
            "batch_images": getattr(forward_timing.get(), "batch_images", None),
        },
    )
