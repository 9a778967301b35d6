"""The figures the deployment tests measure; tests/deploy/conftest.py prints them at the end of the run."""

# What a deploying user would want to know, filled by the tests as they measure it.
FIGURES: dict[str, str] = {}
