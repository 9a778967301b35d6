"""Serving benchmarks: sae-serve against its peers, gRPC against REST, worker processes, the load balancer."""
