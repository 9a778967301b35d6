"""sae-serve: the inference core (core/), its transports (http/, grpc/), and the processes that run them (workers/)."""

__version__ = "0.1.0"
