"""Stacked autoencoder: tanh encoders, mirrored decoders, and a log-softmax classification head."""

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


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


class StackedAutoencoder(nn.Module):
    """encoders[k]: widths[k] -> widths[k+1]; decoders[k]: widths[k+1] -> widths[k]; head: code -> classes."""

    def __init__(self, config: SAEConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.encoders = nn.ModuleList(nn.Linear(w[k], w[k + 1]) for k in range(config.depth))
        self.decoders = nn.ModuleList(nn.Linear(w[k + 1], w[k]) for k in range(config.depth))
        self.head = nn.Linear(w[-1], config.num_classes)
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.dropout = nn.Dropout(config.dropout)

    def _depth(self, depth: int | None) -> int:
        depth = self.config.depth if depth is None else depth
        if not 1 <= depth <= self.config.depth:
            raise ValueError(f"depth must be between 1 and {self.config.depth}, got {depth}")
        return depth

    def encode(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Code after `depth` encoder layers (all of them by default)."""
        h = x  # (B, 784)
        for k in range(self._depth(depth)):  # indexing: a slice of a ModuleList builds a new ModuleList each call
            h = torch.tanh(self.encoders[k](h))  # (B, 400), then (B, 256)
        return h

    def encode_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every encoder layer's output, first to last: [(B, 400), (B, 256)]; the last is `encode`'s code."""
        layers, h = [], x
        for encoder in self.encoders:
            h = torch.tanh(encoder(h))
            layers.append(h)
        return layers

    def decode(self, code: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Mirror of `encode`: tanh back to each hidden width, sigmoid back to pixels."""
        h = code
        for k in reversed(range(self._depth(depth))):
            h = self.decoders[k](h)
            h = torch.sigmoid(h) if k == 0 else torch.tanh(h)
        return h  # (B, 784)

    def reconstruct(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, depth), depth)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities over classes, (B, num_classes)."""
        h = self.input_dropout(x)
        for encoder in self.encoders:
            h = self.dropout(torch.tanh(encoder(h)))
        return self.classify_code(h)

    def classify_code(self, code: torch.Tensor) -> torch.Tensor:
        """Log-probabilities from an already computed full-depth code, so one encoding can serve both heads."""
        return torch.log_softmax(self.head(code), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(x)
