"""The peer servers the serving benchmark measures sae-serve against, on the same checkpoint."""
