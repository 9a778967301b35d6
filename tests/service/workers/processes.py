"""The worker processes of a running supervisor, read from /proc."""

from pathlib import Path


def workers_of(supervisor: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing's resource tracker is not one)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == supervisor and fields[0] != "Z" and b"resource_tracker" not in cmdline:
            children.append(int(stat.parent.name))
    return sorted(children)
