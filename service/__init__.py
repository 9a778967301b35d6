"""sae-serve: the inference core (core/), its transports (http/, grpc/), and the processes that run them (workers/)."""

__version__ = "0.1.0"  # as pyproject.toml says (tests/service/test_version.py)
