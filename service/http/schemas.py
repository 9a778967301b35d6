"""Request and response shapes, as the OpenAPI docs show them."""

from typing import Any, Literal

from pydantic import BaseModel, Field


class ImagesRequest(BaseModel):
    images: list[list[list[float]] | list[float]] = Field(
        description="28x28 pixel arrays (rows of 28) or flat arrays of 784, row-major, white ink on black"
    )
    dtype: Literal["uint8", "float"] = Field(
        "uint8", description="uint8: integers 0-255; float: numbers 0-1 (rounded to the nearest 1/255)"
    )


OOD_SCORE = (
    "the out-of-distribution score: higher, less like the training images (the Mahalanobis distances of the pixels "
    "and of both encoder layers with the reconstruction error; the reconstruction error alone for models trained "
    "before the score)"
)
IN_DISTRIBUTION = (
    "false where the image is flagged as unlike the training images: ood_score above the model's threshold "
    "(GET /models: ood.threshold), or, for models with the score, a flat image (blank or one grey)"
)


class TopClass(BaseModel):
    label: int
    class_name: str
    probability: float


class Prediction(BaseModel):
    label: int = Field(description="index of the most probable class")
    class_name: str
    probabilities: dict[str, float] = Field(description="one per class, in class order, keyed by class name")
    top_k: list[TopClass]
    reconstruction_error: float = Field(description="mean squared error of the reconstruction, pixels in [0, 1]")
    ood_score: float = Field(description=OOD_SCORE)
    in_distribution: bool = Field(description=IN_DISTRIBUTION)
    abstained: bool = Field(
        description="the top probability is under the request's min_confidence, or min_confidence is above 0 and "
        "the image is not in distribution: route the image to a person"
    )


class ClassifyResponse(BaseModel):
    model: str
    model_version: int = Field(description="the version of the model that answered")
    predictions: list[Prediction]


class Reconstruction(BaseModel):
    pixels: list[list[int]] = Field(description="28x28 uint8 rows")
    reconstruction_error: float
    ood_score: float = Field(description=OOD_SCORE)
    in_distribution: bool = Field(description=IN_DISTRIBUTION)


class ReconstructResponse(BaseModel):
    model: str
    model_version: int = Field(description="the version of the model that answered")
    reconstructions: list[Reconstruction]


class EmbedResponse(BaseModel):
    model: str
    model_version: int = Field(description="the version of the model that answered")
    layer: int
    dimension: int
    embeddings: list[list[float]]
    ood_scores: list[float] = Field(description="each image's: " + OOD_SCORE)
    in_distribution: list[bool] = Field(description="each image's: " + IN_DISTRIBUTION)


class Neighbour(BaseModel):
    index: int = Field(description="the image's index in its data set's split (the reference set's `split`)")
    label: int
    class_name: str
    similarity: float = Field(description="cosine similarity of the two embeddings")
    distance: float = Field(description="1 - similarity")
    image: str = Field(description="where to see it: GET this path for a PNG")


class Vote(BaseModel):
    label: int = Field(description="the most frequent label of the k nearest (a tie: the nearest tied one's)")
    class_name: str
    share: float = Field(description="the share of the k that voted for it")
    k: int = Field(description="the neighbours that vote: chosen on the validation split, in the card")
    agrees: bool = Field(description="whether it is the classifier's label")


class SimilarImage(BaseModel):
    label: int = Field(description="the classifier's label")
    class_name: str
    probability: float = Field(description="its calibrated probability")
    ood_score: float = Field(description=OOD_SCORE)
    in_distribution: bool = Field(description=IN_DISTRIBUTION)
    vote: Vote = Field(description="the k-NN vote: a second opinion beside the classifier's")
    neighbours: list[Neighbour] = Field(description="the nearest reference images, nearest first")


class ReferenceInfo(BaseModel):
    split: str = Field(description="train: the model's training images, its validation split held out")
    size: int


class SimilarResponse(BaseModel):
    model: str
    model_version: int = Field(description="the version of the model that answered")
    metric: str = Field(description="cosine: similarity is the embeddings' cosine, distance 1 minus it")
    reference: ReferenceInfo
    results: list[SimilarImage] = Field(description="one per image, in input order")


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request, with images for input (service/http/openai_api.py)."""

    model: str = Field(description="a model's name, or name:version", examples=["mnist"])
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="an image or a list: data URLs (data:image/png;base64,...) or bare base64 of image files, or "
        "arrays of 784 pixels 0-255 (28x28, row-major)"
    )
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32 bytes")
    dimensions: int | None = Field(None, description="the model's embedding width, or left out")
    user: str | None = None
    resize: bool = Field(False, description="beyond OpenAI's fields: prepare pictures of any size, as /classify does")


class EmbeddingObject(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="unit length; a base64 string for encoding_format base64")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="784 an image: its pixels, the model's input units")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingObject]
    model: str = Field(description="name:version of the version that answered")
    usage: Usage


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int = Field(description="when the version was trained, in Unix seconds")
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(BaseModel):
    """OpenAI's error form, answered under /v1."""

    error: OpenAIError


class VersionInfo(BaseModel):
    version: int
    state: Literal["READY", "UNAVAILABLE"]
    reason: str = Field("", description="why an unavailable version is not loaded")
    test_accuracy: float | None = Field(None, description="from the version's card, where it can be read")
    weights_sha256: str | None = None
    created: str | None = Field(None, description="when the version was trained, from its card")


class ModelInfo(BaseModel):
    name: str
    loaded: bool
    version: int | None = Field(None, description="the version requests get when they name none: the newest loaded")
    versions: list[VersionInfo] = Field(default_factory=list, description="every version in the repository")
    error: str | None = None
    dataset: str | None = None
    class_names: list[str] | None = None
    architecture: dict[str, Any] | None = None
    pretraining: str | None = None
    recipe: str | None = None
    metrics: dict[str, Any] | None = None
    in_distribution_threshold: float | None = Field(None, description="reconstruction error's, from the card")
    ood: dict[str, Any] | None = Field(
        None, description="the out-of-distribution score: its name, threshold and how it was fitted, from the card"
    )
    device: str | None = None
    runtime: str | None = Field(None, description="what runs the model's pass: torch or onnxruntime")
    weights_sha256: str | None = None
    embedding: dict[str, Any] | None = Field(
        None, description="what /v1/embeddings, /similar and `sae-train embed` give: layer, dim, normalisation, metric"
    )
    reference: dict[str, Any] | None = Field(
        None, description="the set /similar searches: split, size, the vote's k and accuracies; null where none"
    )


class ModelsResponse(BaseModel):
    default_model: str
    models: list[ModelInfo]


class LiveResponse(BaseModel):
    status: Literal["ok"]


class HealthResponse(BaseModel):
    status: Literal["ready", "not ready"]
    models: list[str] = []
    failed: dict[str, str] = Field(default_factory=dict, description="models that did not load, with the reason")


class ReloadResponse(BaseModel):
    swapped: bool = Field(description="whether the new set replaced the old (only if at least one model loaded)")
    loaded: list[str]
    failed: dict[str, str]
    workers: int = Field(
        description="worker processes asked to reload: the one that answered (whose result this is) and the others"
    )


class ErrorResponse(BaseModel):
    detail: str


class ProtocolErrorResponse(BaseModel):
    """The Open Inference Protocol's error form, answered under /v2."""

    error: str


def error_responses(body: type[BaseModel], descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, each with its body model and a description."""
    return {status: {"model": body, "description": text} for status, text in descriptions.items()}
