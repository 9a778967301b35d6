"""A real Ray cluster on this one machine: each node a `ray start` in a network namespace of its own, with its own
address on a private bridge, as it would be on a machine of its own. What the cluster tests and benchmarks share.

Needs root (`ip netns`, a bridge, veth pairs) and the `ray` extra. Everything it makes is named with its prefix and
removed by `stop()`, which also removes what an earlier run left behind. The addresses are 10.77.0.0/24's; the
host keeps 10.77.0.1, and reaches every node's proxy there, nothing else.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "saeray"
SUBNET = "10.77.0"
BRIDGE = f"{PREFIX}br"
SWITCH = f"{PREFIX}switch"  # the namespace of the bridge
GCS_PORT = 6379
HTTP_PORT = 8000
BIN = Path(sys.executable).parent


def run(*command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class Node:
    name: str  # its network namespace
    address: str
    temp_dir: Path

    @property
    def url(self) -> str:
        """Its Ray Serve proxy."""
        return f"http://{self.address}:{HTTP_PORT}"

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        listed = run("ip", "netns", "pids", self.name, check=False).stdout.split()
        return [int(pid) for pid in listed if pid.isdigit()]


@dataclass
class Cluster:
    """`size` nodes: the head, then workers, each with `cpus` CPUs for Ray to place replicas on."""

    size: int = 3
    cpus: int = 1
    env: dict[str, str] = field(default_factory=dict)  # for the Ray processes, and so for the replicas
    nodes: list[Node] = field(default_factory=list)
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=f"{PREFIX}-")))

    @property
    def head(self) -> Node:
        return self.nodes[0]

    def start(self) -> "Cluster":
        """The network, then the head, then the workers; returns once every node has joined."""
        remove_network()
        self.nodes = [Node(f"{PREFIX}{i}", f"{SUBNET}.{11 + i}", self.scratch / f"node{i}") for i in range(self.size)]
        make_network(self.nodes)
        for i, node in enumerate(self.nodes):
            self.start_node(node, head=i == 0)
        self.wait_for_nodes(self.size)
        return self

    def process_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "RAY_USAGE_STATS_ENABLED": "0",
            **self.env,
        }

    def start_node(self, node: Node, head: bool = False) -> None:
        node.temp_dir.mkdir(parents=True, exist_ok=True)
        common = [
            f"--node-ip-address={node.address}",
            f"--num-cpus={self.cpus}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
        ]
        # The head's dashboard serves Ray's state API (which replica runs where), inside the private network.
        where = ["--head", f"--port={GCS_PORT}", "--dashboard-host=0.0.0.0", f"--temp-dir={node.temp_dir}"]
        if not head:
            where = [f"--address={self.head.address}:{GCS_PORT}"]
        self.run_on(node, [str(BIN / "ray"), "start", *where, *common], 180, f"ray start on {node.name}")

    def run_on(self, node: Node, argv: list[str], timeout: float, what: str) -> str:
        """Run `argv` in the node's namespace with the Ray processes' environment; its output, or RuntimeError."""
        done = subprocess.run(
            node.command(*argv), capture_output=True, text=True, env=self.process_env(), timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed: {done.stdout[-2000:]}{done.stderr[-3000:]}")
        return done.stdout

    def driver(self, code: str, timeout: float = 120) -> Any:
        """Run Python `code` as a Ray driver on the head; it prints one JSON value, returned here."""
        prelude = f"import json, ray\nray.init(address='{self.head.address}:{GCS_PORT}', logging_level='ERROR')\n"
        out = self.run_on(self.head, [sys.executable, "-c", prelude + code], timeout, "the driver")
        return json.loads(out.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self.driver("print(json.dumps(sum(1 for n in ray.nodes() if n['Alive'])))")
            if alive >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"fewer than {count} Ray nodes alive after {timeout:g} s")

    def deploy(self, config: Path, replicas: int | None = None, timeout: float = 300) -> None:
        """`serve run --non-blocking` the config on the head, then wait until `replicas` replicas (any, where None)
        are alive and the proxy of every node that holds one answers ready (Ray Serve runs a proxy on the head and
        on every node with a replica)."""
        serve = [str(BIN / "serve"), "run", "--non-blocking", f"--address={self.head.address}:{GCS_PORT}", str(config)]
        self.run_on(self.head, serve, timeout, "serve run")
        deadline = time.monotonic() + timeout
        while True:
            held = [r["node"] for r in self.replicas()]
            serving = [node for node in self.nodes if node is self.head or node.address in held]
            if (replicas is None or len(held) == replicas) and held and all(answers_ready(n.url) for n in serving):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not serving in {timeout:g} s: replicas on {held}")
            time.sleep(1)

    def serving_nodes(self) -> list[Node]:
        """The nodes with a replica, whose proxies answer."""
        held = {r["node"] for r in self.replicas()}
        return [node for node in self.nodes if node.address in held]

    def replicas(self) -> list[dict[str, Any]]:
        """Every live replica of the app: its actor id and the address of the node it runs on."""
        return list(
            self.driver(
                "from ray.util.state import list_actors\n"
                "nodes = {n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes()}\n"
                "found = [a for a in list_actors(filters=[('state', '=', 'ALIVE')], limit=1000)"
                " if 'sae-serve' in (a.get('class_name') or '') and 'Replica' in (a.get('class_name') or '')]\n"
                "print(json.dumps([{'actor': a['actor_id'], 'node': nodes.get(a['node_id'])} for a in found]))"
            )
        )

    def kill_node(self, node: Node) -> None:
        """SIGKILL every process of the node, as a machine that loses power."""
        for pid in node.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop every node and remove the network and the scratch folder, whatever state they are in."""
        for node in reversed(self.nodes):
            subprocess.run(node.command(str(BIN / "ray"), "stop", "--force"), capture_output=True, timeout=60)
            self.kill_node(node)
        remove_network()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def answers_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def make_network(nodes: list[Node]) -> None:
    """A bridge in a namespace of its own (the switch, whose firewall is its own: the host's may drop bridged
    traffic, as Docker's does), each node's namespace wired to it at its own address, and the host wired to it at
    .1."""
    switch = ["ip", "netns", "exec", SWITCH]
    run("ip", "netns", "add", SWITCH)
    run(*switch, "ip", "link", "add", BRIDGE, "type", "bridge")
    run(*switch, "ip", "link", "set", BRIDGE, "up")
    run("ip", "link", "add", f"{PREFIX}host", "type", "veth", "peer", "name", f"{PREFIX}hostb")
    run("ip", "link", "set", f"{PREFIX}hostb", "netns", SWITCH)
    run(*switch, "ip", "link", "set", f"{PREFIX}hostb", "master", BRIDGE)
    run(*switch, "ip", "link", "set", f"{PREFIX}hostb", "up")
    run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", f"{PREFIX}host")
    run("ip", "link", "set", f"{PREFIX}host", "up")
    for i, node in enumerate(nodes):
        outside, inside = f"{PREFIX}b{i}", f"{PREFIX}n{i}"
        run("ip", "netns", "add", node.name)
        run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        run("ip", "link", "set", inside, "netns", node.name)
        run("ip", "link", "set", outside, "netns", SWITCH)
        run(*switch, "ip", "link", "set", outside, "master", BRIDGE)
        run(*switch, "ip", "link", "set", outside, "up")
        run(*node.command("ip", "addr", "add", f"{node.address}/24", "dev", inside))
        run(*node.command("ip", "link", "set", inside, "up"))
        run(*node.command("ip", "link", "set", "lo", "up"))


def remove_network() -> None:
    """Every namespace, veth and bridge of this prefix, with any process left in a namespace."""
    listed = run("ip", "netns", "list", check=False).stdout.split("\n")
    for name in (line.split()[0] for line in listed if line.startswith(PREFIX)):
        for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "delete", name, check=False)
    links = run("ip", "-o", "link", "show", check=False).stdout.splitlines()
    for link in links:
        name = link.split(":")[1].strip().split("@")[0] if ":" in link else ""
        if name.startswith(PREFIX):
            run("ip", "link", "delete", name, check=False)
