"""Python client for sae-serve: classify, reconstruct and embed images, sync or async.

from sae_client import Client
with Client("http://127.0.0.1:8000", api_key=None) as client:
    client.classify("digit.png")["label"]
"""

from sae_client.client import AsyncClient, Client, Embeddings, Reconstructions, SAEError

__all__ = ["AsyncClient", "Client", "Embeddings", "Reconstructions", "SAEError"]
