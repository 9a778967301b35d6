"""Service settings, read once from environment variables prefixed `SAE_`: the one configuration of a process."""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic.config import JsonDict
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core.versions import Policies

# Set by `sae-serve` for its workers when it runs several (service.workers): how many there are, the supervisor's
# process id, the file holding the model repository's loads and unloads (service.core.sync), and the folder of
# their Prometheus metrics (prometheus_client reads that variable itself too).
WORKERS_ENV = "SAE_WORKERS"
SUPERVISOR_ENV = "SAE_SUPERVISOR_PID"
REPOSITORY_STATE_ENV = "SAE_REPOSITORY_STATE"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Fields set by the supervisor for its workers, left out of the settings a user reads (docs/settings.md).
INTERNAL: JsonDict = {"internal": True}
# A comma-separated environment variable read as a list (NoDecode: not as JSON, pydantic-settings' default).
CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAE_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 in a container)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="TCP port of the gRPC Open Inference Protocol (Triton's default); 0: off"
    )
    artifacts_dir: Path = Field(
        Path("artifacts"),
        description="the model repository: <model>/<version>/ checkpoint folders (card.json, weights)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU")
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description="what runs the models: auto: torch on CUDA, ONNX Runtime on the CPU where it is installed and the "
        "checkpoint has its ONNX graph, else torch; onnxruntime: ONNX Runtime on the CPU only",
    )
    default_model: str = Field("mnist", description="model used when a request names none")
    max_upload_bytes: int = Field(8 * 1024 * 1024, gt=0, description="largest request body accepted")
    max_batch_images: int = Field(1024, gt=0, description="most images in one request")
    max_image_pixels: int = Field(40_000_000, gt=0, description="largest width x height decoded, read from the header")
    max_json_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="largest JSON body (1,024 images of 28x28 need ~3 MB)"
    )
    max_json_depth: int = Field(6, ge=4, description="deepest nesting of arrays and objects in a JSON body")
    request_timeout_s: float = Field(30.0, gt=0, description="longest a request may take, reading its body included")
    batch_max_images: int = Field(256, gt=0, description="most images one micro-batched forward pass takes")
    batch_max_wait_ms: float = Field(
        2.0, ge=0, description="longest a request waits for others to share its forward pass, from its arrival"
    )
    max_pending_images: int = Field(
        2048,
        ge=0,
        description="images of one model's requests pending in a worker (queued or in a forward pass) at which the "
        "next request is refused at once (HTTP 503 with Retry-After, gRPC UNAVAILABLE); 0: no bound",
    )
    api_keys: CommaList = Field([], description="comma-separated API keys; empty: no authentication")
    docs_public: bool = Field(True, description="serve /docs and /openapi.json without an API key")
    metrics_public: bool = Field(False, description="serve /metrics without an API key when keys are set")
    log_format: Literal["json", "text"] = Field("json", description="json: one JSON object a log line")
    cors_origins: CommaList = Field([], description="comma-separated origins allowed by CORS; empty: CORS off")
    reload_on_sighup: bool = Field(True, description="reload the models from the artifacts folder on SIGHUP")
    graceful_shutdown_s: int = Field(20, gt=0, description="on SIGTERM, how long in-flight requests may finish")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="log level")
    workers: int = Field(
        0, ge=0, description="worker processes sharing the port; 0: one per CPU core on the CPU, half the cores on CUDA"
    )

    intra_op_threads: int = Field(
        0,
        ge=0,
        json_schema_extra=INTERNAL,
        description="set by sae-serve for its workers: each one's share of the cores",
    )
    supervisor_pid: int | None = Field(
        None, json_schema_extra=INTERNAL, description="set by sae-serve for its workers: the supervisor's process id"
    )
    repository_state: Path | None = Field(
        None, json_schema_extra=INTERNAL, description="set by sae-serve for its workers: the shared repository state"
    )
    metrics_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices(METRICS_DIR_ENV, "metrics_dir"),
        json_schema_extra=INTERNAL,
        description="set by sae-serve for its workers: where every worker writes its Prometheus metrics",
    )

    version_policy: CommaList = Field(
        ["latest:1"],
        description="versions loaded: latest:N, all or specific:V[:V...], for every model, or model=policy for one "
        "(comma-separated, e.g. latest:1,mnist=latest:2)",
    )

    @field_validator("version_policy")
    @classmethod
    def check_version_policy(cls, value: list[str]) -> list[str]:
        Policies.parse(value)  # a policy that does not parse stops the service at start, saying why
        return value

    @field_validator("api_keys", "cors_origins", "version_policy", mode="before")
    @classmethod
    def split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
