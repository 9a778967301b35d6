"""Python client for sae-serve: classify, reconstruct and embed images, and find their nearest reference images,
sync or async.

from sae_client import Client
with Client("http://127.0.0.1:8000", api_key=None) as client:
    client.classify("digit.png")["label"]
"""

from sae_client.client import AsyncClient, Client, Embeddings, Reconstructions, ReferenceImage, SAEError

__all__ = ["AsyncClient", "Client", "Embeddings", "Reconstructions", "ReferenceImage", "SAEError"]
