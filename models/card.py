"""The model card: everything training knows about a checkpoint that the service needs, typed and versioned.

It is the one contract between training (which writes it) and the service (which reads it): what the
classes are called, how the data set framed its subjects, how well the model did and how its
reconstruction errors spread (for the in-distribution threshold), and the weights' sha256. What
training records beyond that (seed, data md5s, per-stage losses, timings, machine) rides along in
`provenance`, written and shown but never relied on.
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from models.config import SAEConfig
from models.errors import CheckpointError

FORMAT_VERSION = 6  # 6 added `embedding` and `reference`; 5 `graph`; 4 `ood`; 3 `calibration`; 2 `framing`
PERCENTILES = ("p50", "p90", "p99", "p99.9")
SCORE_NAME = "mahalanobis(input, layers)+reconstruction"  # the out-of-distribution score of models/ood.py
OOD_FILE = "ood.safetensors"
TINY = 1e-12  # the score's floor under a distance or error before its log (torch's and the ONNX graph's)
REFERENCE_FILE = "reference.safetensors"
NORMALISATION = "l2"  # the served embedding is scaled to unit length (models/reference.py)
METRIC = "cosine"  # and compared by cosine similarity; a neighbour's distance is one minus it
MAX_NEIGHBOURS = 100  # the most neighbours a query may ask for, and a vote take
REFERENCE_SPLITS = ("train",)  # the split a reference set is drawn from


@dataclass(frozen=True)
class Framing:
    """How the data set placed its subjects in the 28x28 frame, so a photo can be prepared the same way."""

    box: int  # the side of the square the subject was fitted into
    centre_by_mass: bool  # centred by its centre of mass (MNIST), else by its bounding box


# The two data sets this project trains on; a format 1 card (which did not record framing) is one of them.
MNIST_FRAMING = Framing(box=20, centre_by_mass=True)  # digits fitted into 20x20, centred by mass
FULL_FRAME = Framing(box=28, centre_by_mass=False)  # Fashion-MNIST's garments fill the frame
FORMAT_1_FRAMINGS = {"mnist": MNIST_FRAMING, "fashion-mnist": FULL_FRAME}


@dataclass(frozen=True)
class Metrics:
    """Test-set figures; the reconstruction-error percentiles set the service's in-distribution threshold."""

    test_accuracy: float
    reconstruction_mse: float
    reconstruction_error_percentiles: dict[str, float]
    test_examples: int = 0
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    confusion_matrix: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True)
class Calibration:
    """What training fitted on its validation split (held out of the training images, never the test set):
    the temperature the service divides the logits by, and the in-distribution threshold; and, measured on
    the test set, the expected calibration error (15 bins) and NLL without and with the temperature."""

    temperature: float
    validation_examples: int
    in_distribution_threshold: float  # the validation split's 99th percentile of per-image reconstruction error
    test_ece_before: float
    test_ece_after: float
    test_nll_before: float
    test_nll_after: float


@dataclass(frozen=True)
class OutOfDistribution:
    """The card's `ood` section (the score of models/ood.py): its fitted scalars, its threshold and how it was set."""

    score: str  # SCORE_NAME
    false_flag_rate: float  # the share of the validation split above the threshold
    threshold: float  # scores above it are flagged
    layer_log_means: tuple[float, ...]  # of each layer's log Mahalanobis distance over the training images: the
    # input's (layer 0), then each encoder layer's
    layer_log_stds: tuple[float, ...]
    reconstruction_log_mean: float  # of log reconstruction error over the training images
    reconstruction_log_std: float
    flat_std: float  # pixel standard deviation under which an image is flat, and flagged
    validation_examples: int
    file: str = OOD_FILE
    sha256: str = ""


@dataclass(frozen=True)
class Graph:
    """The card's `graph` section: the whole pass as an ONNX graph (models/graph.py), for runtimes without torch."""

    file: str
    sha256: str
    opset: int  # the ONNX operator set it is written in
    ir_version: int  # the file format's version, one the runtimes of its day read


@dataclass(frozen=True)
class Embedding:
    """The card's `embedding` section: the vector the service gives embedding consumers (/v1/embeddings, /similar,
    `sae-train embed`): an encoder layer's output, its width, how it is scaled and how vectors are compared."""

    layer: int  # 1-based: the last is the code
    dim: int
    normalisation: str = NORMALISATION
    metric: str = METRIC


@dataclass(frozen=True)
class Reference:
    """The card's `reference` section: the training images' embeddings, labels and pixels (models/reference.py),
    which /similar searches, and how well their k-NN vote classifies."""

    file: str
    sha256: str
    split: str  # "train": the training images, the validation split held out
    size: int
    vote_k: int  # the neighbours that vote, chosen on the validation split
    vote_validation_accuracy: float
    vote_test_accuracy: float


@dataclass(frozen=True)
class ModelCard:
    dataset: str
    class_names: tuple[str, ...]
    framing: Framing
    config: SAEConfig
    metrics: Metrics
    pretraining: str
    recipe_name: str
    weights_sha256: str
    weights_file: str = "model.safetensors"
    recipe: dict[str, Any] = field(default_factory=dict)  # the recipe's settings, as training ran them
    provenance: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None  # cards before format 3 have none: temperature 1
    ood: OutOfDistribution | None = None  # cards before format 4 have none: flagged by reconstruction error
    graph: Graph | None = None  # cards before format 5, and checkpoints not exported, have none: torch only
    embedding: Embedding | None = None  # cards before format 6 have none: the code, unit length, cosine
    reference: Reference | None = None  # cards before format 6 have none, nor checkpoints written without: no /similar

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "class_names": list(self.class_names),
            "framing": asdict(self.framing),
            "config": self.config.to_dict(),
            "metrics": asdict(self.metrics),
            "pretraining": self.pretraining,
            "recipe": {**self.recipe, "name": self.recipe_name},
            "weights_file": self.weights_file,
            "weights_sha256": self.weights_sha256,
            "provenance": self.provenance,
            **({"calibration": asdict(self.calibration)} if self.calibration else {}),
            **({"ood": asdict(self.ood)} if self.ood else {}),
            **({"graph": asdict(self.graph)} if self.graph else {}),
            **({"embedding": asdict(self.embedding)} if self.embedding else {}),
            **({"reference": asdict(self.reference)} if self.reference else {}),
        }

    @classmethod
    def from_dict(cls, raw: object, source: str = "card") -> "ModelCard":
        """Validate a card read from JSON; a format 1 card of MNIST or Fashion-MNIST is upgraded on the way."""
        card = _Reader(raw, source)
        version = card.integer("format_version")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: card format {version} was written by a newer sae-serve (this one reads up to "
                f"{FORMAT_VERSION}); upgrade sae-serve"
            )
        dataset = card.text("dataset")
        if version < 2:
            if dataset not in FORMAT_1_FRAMINGS:
                raise CheckpointError(
                    f"{source}: card format {version} of data set {dataset!r} does not say how the data set "
                    "framed its images; retrain the model to write a current card"
                )
            framing = FORMAT_1_FRAMINGS[dataset]
        else:
            framing_reader = card.section("framing")
            framing = Framing(framing_reader.integer("box"), framing_reader.boolean("centre_by_mass"))
        class_names = tuple(card.texts("class_names"))
        try:
            config = SAEConfig.from_dict(card.section("config").raw)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{source}: 'config' is not a model configuration: {e}") from e
        if config.num_classes != len(class_names):
            raise CheckpointError(
                f"{source}: {len(class_names)} class names for a model of {config.num_classes} classes"
            )
        metrics_reader = card.section("metrics")
        percentiles = metrics_reader.section("reconstruction_error_percentiles")
        metrics = Metrics(
            test_accuracy=metrics_reader.number("test_accuracy"),
            reconstruction_mse=metrics_reader.number("reconstruction_mse"),
            reconstruction_error_percentiles={p: percentiles.number(p) for p in PERCENTILES},
            test_examples=int(metrics_reader.raw.get("test_examples") or 0),
            per_class_accuracy=dict(metrics_reader.raw.get("per_class_accuracy") or {}),
            confusion_matrix=list(metrics_reader.raw.get("confusion_matrix") or []),
        )
        recipe = dict(card.section("recipe").raw)
        calibration = None
        if version >= 3 and "calibration" in card.raw:
            reader = card.section("calibration")
            temperature = reader.number("temperature")
            if temperature <= 0:
                raise CheckpointError(f"{source}: 'calibration': 'temperature' must be above 0, found {temperature}")
            calibration = Calibration(
                temperature=temperature,
                validation_examples=reader.integer("validation_examples"),
                in_distribution_threshold=reader.number("in_distribution_threshold"),
                test_ece_before=reader.number("test_ece_before"),
                test_ece_after=reader.number("test_ece_after"),
                test_nll_before=reader.number("test_nll_before"),
                test_nll_after=reader.number("test_nll_after"),
            )
        known = {"format_version", "dataset", "class_names", "framing", "config", "metrics", "pretraining"}
        known |= {"recipe", "weights_file", "weights_sha256", "provenance", "calibration", "ood", "graph"}
        known |= {"embedding", "reference"}
        # format 1 kept provenance at the top level
        provenance = dict(card.raw.get("provenance") or {k: v for k, v in card.raw.items() if k not in known})
        ood = _ood(card.section("ood"), config.depth + 1) if version >= 4 and "ood" in card.raw else None
        graph = _graph(card.section("graph")) if version >= 5 and "graph" in card.raw else None
        embedding = _embedding(card.section("embedding"), config) if version >= 6 and "embedding" in card.raw else None
        reference = _reference(card.section("reference")) if version >= 6 and "reference" in card.raw else None
        return cls(
            dataset=dataset,
            class_names=class_names,
            framing=framing,
            config=config,
            metrics=metrics,
            pretraining=card.text("pretraining"),
            recipe_name=str(recipe.pop("name", "unknown")),
            weights_sha256=card.text("weights_sha256"),
            weights_file=str(card.raw.get("weights_file", "model.safetensors")),
            recipe=recipe,
            provenance=provenance,
            calibration=calibration,
            ood=ood,
            graph=graph,
            embedding=embedding,
            reference=reference,
        )

    @property
    def error_threshold(self) -> float:
        """Reconstruction error at or under which an image counts as in-distribution: the validation split's
        99th percentile (the test set's, on cards written before there was one)."""
        if self.calibration is not None:
            return self.calibration.in_distribution_threshold
        return self.metrics.reconstruction_error_percentiles["p99"]

    @property
    def served_embedding(self) -> Embedding:
        """What embedding consumers get: the card's section, else (older cards) the code, unit length, cosine."""
        return self.embedding or Embedding(self.config.depth, self.config.hidden_dims[-1])

    @property
    def temperature(self) -> float:
        """What the service divides the logits by before the softmax: 1 on cards without calibration."""
        return self.calibration.temperature if self.calibration is not None else 1.0


def _file_name(reader: "_Reader", key: str) -> str:
    """A file's name in the checkpoint's folder: no folder of its own, so a card cannot point outside."""
    name = reader.text(key)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise CheckpointError(
            f"{reader.where}: '{key}' must be a file name in the checkpoint's folder, found {name!r}"[:300]
        )
    return name


def _ood(reader: "_Reader", parts: int) -> OutOfDistribution:
    """`parts`: the input and each encoder layer."""
    means, stds = reader.reals("layer_log_means", parts), reader.reals("layer_log_stds", parts)
    if min(stds) <= 0 or reader.number("reconstruction_log_std") <= 0:
        raise CheckpointError(f"{reader.where}: every standard deviation must be above 0")
    if reader.text("score") != SCORE_NAME:
        named = reader.text("score")[:100]
        raise CheckpointError(f"{reader.where}: 'score' {named!r} is not one this sae-serve computes ({SCORE_NAME!r})")
    if not 0 < reader.number("false_flag_rate") < 1:
        raise CheckpointError(f"{reader.where}: 'false_flag_rate' must lie between 0 and 1")
    return OutOfDistribution(
        score=reader.text("score"),
        false_flag_rate=reader.number("false_flag_rate"),
        threshold=reader.real("threshold"),
        layer_log_means=means,
        layer_log_stds=stds,
        reconstruction_log_mean=reader.real("reconstruction_log_mean"),
        reconstruction_log_std=reader.number("reconstruction_log_std"),
        flat_std=reader.number("flat_std"),
        validation_examples=reader.integer("validation_examples"),
        file=_file_name(reader, "file"),
        sha256=reader.text("sha256"),
    )


def _graph(reader: "_Reader") -> Graph:
    return Graph(
        file=_file_name(reader, "file"),
        sha256=reader.text("sha256"),
        opset=reader.integer("opset"),
        ir_version=reader.integer("ir_version"),
    )


def _embedding(reader: "_Reader", config: SAEConfig) -> Embedding:
    layer, dim = reader.integer("layer"), reader.integer("dim")
    if layer > config.depth or dim != config.hidden_dims[layer - 1]:
        raise CheckpointError(f"{reader.where}: layer {layer} of {dim} units is not one of the model's encoder layers")
    for key, known in (("normalisation", NORMALISATION), ("metric", METRIC)):
        if reader.text(key) != known:
            raise CheckpointError(f"{reader.where}: '{key}' {reader.text(key)[:50]!r} is not one this sae-serve serves")
    return Embedding(layer, dim)


def _reference(reader: "_Reader") -> Reference:
    section = Reference(
        file=_file_name(reader, "file"),
        sha256=reader.text("sha256"),
        split=reader.text("split"),
        size=reader.integer("size"),
        vote_k=reader.integer("vote_k"),
        vote_validation_accuracy=reader.number("vote_validation_accuracy"),
        vote_test_accuracy=reader.number("vote_test_accuracy"),
    )
    if section.split not in REFERENCE_SPLITS:
        raise CheckpointError(f"{reader.where}: 'split' {section.split[:50]!r} is not one of {REFERENCE_SPLITS}")
    if section.vote_k > MAX_NEIGHBOURS:
        raise CheckpointError(f"{reader.where}: 'vote_k' {section.vote_k} is over {MAX_NEIGHBOURS}")
    if max(section.vote_validation_accuracy, section.vote_test_accuracy) > 1:
        raise CheckpointError(f"{reader.where}: the vote's accuracies must lie between 0 and 1")
    return section


class _Reader:
    """Typed reads from a JSON object, each failure a CheckpointError naming the field."""

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, dict):
            raise CheckpointError(f"{where}: expected a JSON object, found {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.raw:
            raise CheckpointError(f"{self.where}: '{key}' is missing")
        return self.raw[key]

    def _wrong(self, key: str, wanted: str) -> CheckpointError:
        return CheckpointError(f"{self.where}: '{key}' must be {wanted}, found {self.raw[key]!r}"[:300])

    def section(self, key: str) -> "_Reader":
        return _Reader(self._get(key), f"{self.where}: '{key}'")

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise self._wrong(key, "a non-empty string")
        return value

    def texts(self, key: str) -> list[str]:
        value = self._get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self._wrong(key, "a list of non-empty strings")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self._wrong(key, "a positive whole number")
        return value

    def boolean(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false")
        return value

    def real(self, key: str) -> float:
        """A finite number of either sign."""
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._wrong(key, "a finite number")
        return float(value)

    def reals(self, key: str, count: int) -> tuple[float, ...]:
        """`count` finite numbers of either sign."""
        value = self._get(key)
        if not isinstance(value, list | tuple) or len(value) != count:
            raise self._wrong(key, f"a list of {count} numbers")
        return tuple(_Reader({key: v}, self.where).real(key) for v in value)

    def number(self, key: str) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise self._wrong(key, "a finite number >= 0")
        return float(value)
