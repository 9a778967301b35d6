"""Benchmarks that print figures, in folders by purpose; each runs as `python -m bench.<folder>.<name>`."""
