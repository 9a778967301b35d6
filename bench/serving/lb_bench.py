"""What re-resolving the replicas costs: requests per second through nginx, the repository's config against
an `upstream` block resolved once at start (with keepalive connections to the replicas), on the compose stack.

    .venv/bin/python -m bench.serving.lb_bench [--seconds 10] [--connections 16 64]

Needs root, Debian's docker.io, debootstrap and wrk, and the data and checkpoints of `make models` (copied
into the stack's volumes, so nothing is trained). Starts the test bed's Docker engine if it is not running,
and stops it again if it started it.
"""

import argparse
import tempfile
from pathlib import Path

from bench.harness import ROOT
from bench.serving.serve_bench import lua_script, wrk
from bench.serving.stack import compose_stack, run

PROJECT = "sae-serve-lb-bench"
PORT = "18090"
STATIC_UPSTREAM = """
    upstream sae_api {
        server api:8000;
        keepalive 64;
    }
"""


def static_config() -> str:
    """The repository's nginx.conf with the one alternative: a fixed upstream block and keepalive."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    text = text.replace("    server {\n", STATIC_UPSTREAM + "\n    server {\n", 1)
    keepalive = 'proxy_pass http://sae_api;\n            proxy_set_header Connection "";'
    return text.replace("proxy_pass http://$sae_api;", keepalive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="seconds of load per cell (default: 10)")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64], help="wrk connections (default: 16 64)")
    args = parser.parse_args()
    compose = ["docker", "compose", "-p", PROJECT]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        script = lua_script(folder, "digit", bytes(784), "application/octet-stream")
        (folder / "nginx-static.conf").write_text(static_config())
        override = folder / "static.yml"
        override.write_text(
            f"services:\n  lb:\n    volumes:\n      - {folder / 'nginx-static.conf'}:/etc/nginx/nginx.conf:ro\n"
        )
        with compose_stack(PROJECT, PORT) as env:
            rows = []
            variants = (
                ("repository's: re-resolved every second", []),
                ("upstream block + keepalive", ["-f", "docker-compose.yml", "-f", str(override)]),
            )
            for name, files in variants:
                run([*compose, *files, "up", "--detach", "--wait", "lb"], env)
                for connections in args.connections:
                    wrk(f"http://127.0.0.1:{PORT}/classify", script, connections, 2)  # warm-up
                    cell = wrk(f"http://127.0.0.1:{PORT}/classify", script, connections, args.seconds)
                    errors = f", {cell.errors} errors" if cell.errors else ""
                    p99 = f"{cell.p99_ms:.1f} ms{errors}"
                    rows.append(f"| {name} | {connections} | {cell.requests_per_s:,.0f} | {p99} |")
    print("| nginx config | connections | req/s | p99 |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
