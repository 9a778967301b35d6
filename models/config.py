"""The architecture's settings and the image size: plain values, read by the card without torch."""

from dataclasses import asdict, dataclass, field
from typing import Any

IMAGE_SIDE = 28
PREPROCESSING = "uint8 grayscale 28x28, row-major, divided by 255 -> float32 in [0, 1], shape (N, 784)"


@dataclass(frozen=True)
class SAEConfig:
    input_dim: int = 784
    hidden_dims: tuple[int, ...] = (400, 256)
    num_classes: int = 10
    # Dropout only acts in training mode; it is kept here so a checkpoint says how it was fine-tuned.
    input_dropout: float = 0.0
    dropout: float = 0.0
    activation: str = field(default="tanh", init=False)
    output_activation: str = field(default="sigmoid", init=False)

    @property
    def depth(self) -> int:
        return len(self.hidden_dims)

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.input_dim, *self.hidden_dims)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SAEConfig":
        return cls(
            input_dim=int(d["input_dim"]),
            hidden_dims=tuple(int(w) for w in d["hidden_dims"]),
            num_classes=int(d["num_classes"]),
            input_dropout=float(d.get("input_dropout", 0.0)),
            dropout=float(d.get("dropout", 0.0)),
        )
