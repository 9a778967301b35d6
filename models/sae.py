"""Stacked autoencoder: tanh encoders, mirrored decoders, and a log-softmax classification head."""

import torch
from torch import nn

from models.config import SAEConfig


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
