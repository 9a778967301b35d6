"""/models and the health probes."""

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.core.repository import LoadedModels, ServedModel
from service.http.deps import PlaneDep
from service.http.schemas import HealthResponse, LiveResponse, ModelInfo, ModelsResponse, VersionInfo

router = APIRouter(tags=["meta"])


def version_infos(loaded: LoadedModels, name: str) -> list[VersionInfo]:
    infos = []
    for entry in (e for e in loaded.index if e.name == name):
        card = entry.card
        infos.append(
            VersionInfo(
                version=entry.version,
                state=entry.state,
                reason=entry.reason,
                test_accuracy=card.metrics.test_accuracy if card else None,
                weights_sha256=card.weights_sha256 if card else None,
                created=str(card.provenance.get("created")) if card and card.provenance.get("created") else None,
            )
        )
    return infos


def reference_summary(served: ServedModel) -> dict[str, object] | None:
    section = served.card.reference
    if served.reference is None or section is None:  # none, or its file not copied
        return None
    summary: dict[str, object] = asdict(section)
    for key in ("file", "sha256"):
        summary.pop(key)
    return summary


@router.get("/models", response_model=ModelsResponse)
async def list_models(plane: PlaneDep) -> ModelsResponse:
    """Every known model: loaded ones with the facts of the version requests get by default, and every version
    with its state and its card's figures; failed ones with the reason."""
    loaded = plane.loaded
    infos = []
    for name in loaded.names:
        served = loaded.models.get(name)
        versions = version_infos(loaded, name)
        if served is None:
            error = loaded.failures.get(name, "not loaded")
            infos.append(ModelInfo(name=name, loaded=False, error=error, versions=versions))
            continue
        card = served.card
        infos.append(
            ModelInfo(
                name=name,
                loaded=True,
                version=served.version,
                versions=versions,
                dataset=card.dataset,
                class_names=served.class_names,
                architecture=card.config.to_dict(),
                pretraining=card.pretraining,
                recipe=card.recipe_name,
                metrics={
                    "test_accuracy": card.metrics.test_accuracy,
                    "reconstruction_mse": card.metrics.reconstruction_mse,
                    "reconstruction_error_percentiles": card.metrics.reconstruction_error_percentiles,
                    "calibration": asdict(card.calibration) if card.calibration else None,
                },
                in_distribution_threshold=served.error_threshold,
                ood=served.ood_summary,
                device=served.runner.device,
                runtime=served.runner.runtime,
                weights_sha256=card.weights_sha256,
                embedding=asdict(card.served_embedding),
                reference=reference_summary(served),
            )
        )
    return ModelsResponse(default_model=plane.settings.default_model, models=infos)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(plane: PlaneDep) -> PlainTextResponse:
    """Requests by route, model and status, latency, batch sizes and queue waits, models loaded, process memory."""
    loaded, collected = plane.loaded, plane.metrics
    collected.set_models({name: m.runner.device for name, m in loaded.models.items()}, loaded.names)
    return PlainTextResponse(generate_latest(collected.exported()).decode(), media_type=CONTENT_TYPE_LATEST)


@router.get("/health/live", response_model=LiveResponse)
async def live() -> LiveResponse:
    """The process answers (which models are loaded: /health/ready)."""
    return LiveResponse(status="ok")


@router.get("/health/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def ready(plane: PlaneDep) -> JSONResponse:
    """Ready once at least one model is loaded; lists the loaded models."""
    loaded = plane.loaded
    status = "ready" if loaded.ready else "not ready"
    # A model the repository API unloaded is neither served nor failed.
    failed = {name: why for name, why in loaded.failures.items() if name not in loaded.unloaded}
    body = HealthResponse(status=status, models=sorted(loaded.models), failed=failed)
    return JSONResponse(body.model_dump(), status_code=200 if loaded.ready else 503)
