"""The compose stack for a benchmark: the test bed's Docker engine (started if it is not running, and stopped again
if this started it), the images built, the data and checkpoints of `make models` copied into the stack's volumes
(so nothing is trained), and everything taken down afterwards.

Needs root, Debian's docker.io and debootstrap (deploy/testbed).
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import ROOT
from models.layout import checkpoint_versions


def run(argv: list[str], env: dict[str, str], stdin: bytes | None = None) -> str:
    result = subprocess.run(argv, env=env, cwd=ROOT, input=stdin, capture_output=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stderr.decode()}")
    return result.stdout.decode()


@contextmanager
def compose_stack(project: str, port: str, extra_env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """The stack up (`docker compose up --wait`) under `project`, its load balancer on 127.0.0.1:`port`; yields the
    environment the `docker compose` commands need (with `compose` in it: the command's first words)."""
    artifacts = ROOT / "artifacts"
    if not checkpoint_versions(artifacts / "mnist"):
        sys.exit("no checkpoint in artifacts/mnist: run `make models` first")
    testbed = ROOT / "deploy" / "testbed" / "testbed.py"
    marker = Path("/var/lib/sae-serve-testbed/started-by-testbed.pid")
    started_engine = not marker.exists()
    testbed_env = json.loads(run([sys.executable, str(testbed), "up"], dict(os.environ)))
    env = {**os.environ, **testbed_env, "SAE_LB_PORT": port, **(extra_env or {})}
    compose = ["docker", "compose", "-p", project]
    try:
        run([*compose, "down", "--volumes"], env)
        run([*compose, "build"], env)
        for source, target in ((artifacts, "/artifacts"), (ROOT / "data", "/data")):
            tar = subprocess.run(
                ["tar", "-C", str(source), "-c", "mnist", "fashion-mnist"], capture_output=True, check=True
            )
            run([*compose, "run", "--rm", "--no-deps", "-T", "train", "tar", "-x", "-C", target], env, tar.stdout)
        run([*compose, "up", "--detach", "--wait"], env)
        yield env
    finally:
        run([*compose, "down", "--volumes"], env)
        run(["docker", "image", "prune", "--force"], env)  # layers of replaced images
        if started_engine:
            run([sys.executable, str(testbed), "down"], env)
