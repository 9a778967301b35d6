"""The inference core: models and versions, decoding, micro-batching, forward passes, errors; no transport."""
