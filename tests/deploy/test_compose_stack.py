"""The compose deployment on a real Docker engine: build, train into the volume, serve, break, scale, reload, stop.

The tests share one stack and run in file order, each leaving it as the next expects. Client traffic goes only to
the load balancer's port on 127.0.0.1; a replica's own view (/metrics, /models) is read from inside its container.
"""

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from tests.deploy.figures import FIGURES
from tests.deploy.project import ROOT
from tests.servers import free_port
from training.data import load_dataset

pytestmark = [pytest.mark.slow, pytest.mark.docker]

PROJECT = "sae-serve-test"
DATA_DIR = ROOT / "data"
BATCH = 500
REPLICA_GET = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:8000' + sys.argv[1], timeout=10).read().decode())"
)


@dataclass
class Stack:
    env: dict[str, str]
    lb_url: str

    def run(self, *argv: str, timeout: float = 900, stdin: bytes | None = None) -> str:
        result = subprocess.run(argv, env=self.env, capture_output=True, timeout=timeout, input=stdin, cwd=ROOT)
        assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout.decode()}\n{result.stderr.decode()}"
        return result.stdout.decode()

    def compose(self, *args: str, timeout: float = 900, stdin: bytes | None = None) -> str:
        return self.run("docker", "compose", "-p", PROJECT, *args, timeout=timeout, stdin=stdin)

    def docker(self, *args: str, timeout: float = 120) -> str:
        return self.run("docker", *args, timeout=timeout)

    def containers(self, service: str, *, every: bool = False) -> list[str]:
        lines = self.compose("ps", "--format", "json", *(["--all"] if every else []), service).splitlines()
        return sorted(json.loads(line)["Name"] for line in lines if line.strip())

    def inspect(self, container: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self.docker("inspect", container))[0]  # type: ignore[no-any-return]

    def address(self, container: str) -> str:
        """The container's address on the compose network, which this machine reaches."""
        networks = self.inspect(container)["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"])

    def replica_get(self, container: str, path: str) -> str:
        return self.docker("exec", container, "python", "-c", REPLICA_GET, path)

    def served_requests(self, container: str) -> float:
        """/classify requests this replica has answered, from its own /metrics."""
        total = 0.0
        for line in self.replica_get(container, "/metrics").splitlines():
            if line.startswith("sae_requests_total{") and 'route="/classify"' in line:
                total += float(line.split()[-1])
        return total

    def model_sha256(self, container: str, model: str) -> str:
        models = json.loads(self.replica_get(container, "/models"))["models"]
        return str(next(m["weights_sha256"] for m in models if m["name"] == model))


@dataclass
class Traffic:
    """Clients sending single MNIST digits to /classify through the load balancer until stopped."""

    url: str
    images: np.ndarray
    labels: list[int] | None  # the answers expected, or None while the model may change
    clients: int = 4
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = offset
            while not self._stop.is_set():
                index = i % len(self.images)
                try:
                    response = client.post(
                        "/classify?top_k=1",
                        content=self.images[index].tobytes(),
                        headers={"Content-Type": "application/octet-stream"},
                    )
                    label = response.json()["predictions"][0]["label"] if response.status_code == 200 else None
                    if response.status_code != 200:
                        problem = f"{response.status_code} {response.text[:200]}"
                    elif self.labels is not None and label != self.labels[index]:
                        problem = f"label {label} != {self.labels[index]} for image {index}"
                    else:
                        problem = ""
                except httpx.HTTPError as e:
                    problem = repr(e)
                with self._lock:
                    self.sent += 1
                    if problem:
                        self.failures.append(problem)
                i += self.clients

    def __enter__(self) -> "Traffic":
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def wait_for(condition: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll until check() holds; return the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s: {condition}")
        time.sleep(0.2)
    return time.monotonic() - started


def healthy(stack: Stack, container: str) -> bool:
    state = stack.inspect(container)["State"]
    return bool(state["Running"] and state.get("Health", {}).get("Status") == "healthy")


@pytest.fixture(scope="module")
def stack(docker_env: dict[str, str]) -> Iterator[Stack]:
    """Build the images, seed the data volume, and bring the stack up on an empty artifacts volume."""
    for name in ("mnist", "fashion-mnist"):
        if not (DATA_DIR / name).is_dir():
            pytest.fail(f"no data in {DATA_DIR / name}; run `make data` (make test does) first")
    port = free_port()
    stack = Stack(env={**docker_env, "SAE_LB_PORT": str(port)}, lb_url=f"http://127.0.0.1:{port}")
    stack.compose("down", "--volumes", "--remove-orphans")  # whatever an interrupted run left
    started = time.monotonic()
    stack.compose("build")
    FIGURES["compose build (layer cache as left by earlier runs)"] = f"{time.monotonic() - started:.0f} s"
    # The image of the GPU override (the train image is built on it: all cached), and a name for the stage with torch
    # (most of the build's time), so that pruning keeps it as cache.
    stack.docker("build", "--target", "serve-cuda", "--tag", "sae-serve-cuda:latest", str(ROOT), timeout=900)
    stack.docker("build", "--target", "deps-torch", "--tag", "sae-serve-cache:deps-torch", str(ROOT), timeout=900)
    for image in ("sae-serve:latest", "sae-serve-cuda:latest", "sae-serve-train:latest"):
        FIGURES[f"image {image}"] = (
            f"{int(stack.docker('image', 'inspect', image, '--format', '{{.Size}}')) / 1e9:.2f} GB"
        )
    # Containers here reach no data host: put the checkout's verified data where `sae-train fetch` finds it.
    tar = subprocess.run(["tar", "-C", str(DATA_DIR), "-c", "mnist", "fashion-mnist"], capture_output=True, check=True)
    stack.compose("run", "--rm", "--no-deps", "-T", "train", "tar", "-x", "-C", "/data", stdin=tar.stdout)
    started = time.monotonic()
    stack.compose("up", "--detach", "--wait")
    FIGURES["first `up --wait` on an empty artifacts volume (trains both models)"] = (
        f"{time.monotonic() - started:.0f} s"
    )
    ready = []
    for container in stack.containers("api"):
        state = stack.inspect(container)["State"]
        first_pass = min(np.datetime64(e["End"][:26]) for e in state["Health"]["Log"] if e["ExitCode"] == 0)
        ready.append((first_pass - np.datetime64(state["StartedAt"][:26])) / np.timedelta64(1, "ms") / 1000)
    FIGURES["replica start to its first passing health check"] = ", ".join(f"{s:.1f} s" for s in ready)
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", timeout=120)
        # Each rebuild leaves the layers of the images it replaced (several GB): keep only the named ones.
        stack.docker("image", "prune", "--force", timeout=300)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset("mnist", DATA_DIR)
    return data.test_images.numpy(), data.test_labels.numpy()


def test_the_service_image_is_lean_and_the_train_image_adds_only_the_train_extra(stack: Stack) -> None:
    modules = ("torchvision", "matplotlib", "tqdm", "onnx", "pytest", "torch", "onnxruntime", "fastapi")
    probe = (
        "import importlib.util, json, shutil; "
        f"print(json.dumps({{'modules': [m for m in {modules!r} if importlib.util.find_spec(m)], "
        "'tools': [t for t in ('gcc', 'cc', 'g++', 'make', 'apt-get', 'pip') if shutil.which(t)]}))"
    )
    images = ("sae-serve:latest", "sae-serve-cuda:latest", "sae-serve-train:latest")
    found = {image: json.loads(stack.docker("run", "--rm", image, "python", "-c", probe)) for image in images}
    assert found["sae-serve:latest"]["modules"] == ["onnxruntime", "fastapi"]  # no torch: ONNX Runtime serves
    assert found["sae-serve-cuda:latest"]["modules"] == ["torch", "onnxruntime", "fastapi"]
    assert found["sae-serve-train:latest"]["modules"] == [
        "torchvision",
        "matplotlib",
        "tqdm",
        "onnx",
        "torch",
        "onnxruntime",
        "fastapi",
    ]
    slim = int(stack.docker("image", "inspect", "sae-serve:latest", "--format", "{{.Size}}"))
    assert slim <= 400e6, f"the serving image is {slim / 1e6:.0f} MB, over its 400 MB bound"
    # no compiler; apt-get comes with the Debian base and pip with the venv, which a build stage needs
    assert not {"gcc", "cc", "g++", "make"} & set(found["sae-serve:latest"]["tools"])
    data_files = stack.docker(
        "run",
        "--rm",
        "--user",
        "root",
        "sae-serve:latest",
        "sh",
        "-c",
        "find / -xdev -name '*-ubyte*' -o -xdev -name '*.safetensors'",
    )
    assert data_files.strip() == ""  # no data set and no model baked into the image


def test_replicas_run_as_non_root_on_a_read_only_root_file_system(stack: Stack) -> None:
    replicas = stack.containers("api")
    assert len(replicas) == 2
    for container in replicas:
        info = stack.inspect(container)
        assert info["Config"]["User"] == "sae" and info["HostConfig"]["ReadonlyRootfs"] is True
        assert stack.docker("exec", container, "id", "-u").strip() == "10001"
        for path in ("/opt/venv/probe", "/home/sae/probe", "/artifacts/probe"):
            result = subprocess.run(
                ["docker", "exec", container, "touch", path], env=stack.env, capture_output=True, text=True
            )
            assert result.returncode != 0 and "Read-only file system" in result.stderr, (path, result.stderr)
        stack.docker("exec", container, "touch", "/tmp/probe")  # the one place that may be written


def test_up_trained_the_missing_models_and_a_second_up_does_not_retrain(stack: Stack) -> None:
    first = stack.compose("logs", "--no-log-prefix", "train")
    for name in ("mnist", "fashion-mnist"):
        assert f"{name}: training (/artifacts/{name}/card.json not found" in first
        assert f"-> /artifacts/{name}" in first
    replica = stack.containers("api")[0]
    before = {name: stack.model_sha256(replica, name) for name in ("mnist", "fashion-mnist")}
    started = time.monotonic()
    stack.compose("up", "--detach", "--wait")
    FIGURES["second `up --wait` (models present, no retraining)"] = f"{time.monotonic() - started:.1f} s"
    both = stack.compose("logs", "--no-log-prefix", "train")
    for name in ("mnist", "fashion-mnist"):
        trained = [line for line in both.splitlines() if line.startswith(f"{name}: training (")]
        assert len(trained) == 1  # the first run's, and no other
        assert f"{name}: checkpoint in /artifacts/{name} is present and verified; not retraining" in both
    assert {name: stack.model_sha256(replica, name) for name in before} == before


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_accuracy_through_the_load_balancer_equals_the_model_card(stack: Stack, name: str) -> None:
    data = load_dataset(name, DATA_DIR)
    images, labels = data.test_images.numpy(), data.test_labels.numpy()
    predicted = []
    with httpx.Client(base_url=stack.lb_url, timeout=60) as client:
        card = next(m for m in client.get("/models").json()["models"] if m["name"] == name)
        assert (card["runtime"], card["device"]) == ("onnxruntime", "cpu")  # the slim image: no torch to run
        for start in range(0, len(images), BATCH):
            request_id = f"deploy-{name}-{start}"
            response = client.post(
                f"/classify?model={name}&top_k=1",
                content=images[start : start + BATCH].tobytes(),
                headers={"Content-Type": "application/octet-stream", "X-Request-ID": request_id},
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == request_id
            predicted += [p["label"] for p in response.json()["predictions"]]
    accuracy = float(np.mean(np.array(predicted) == labels))
    FIGURES[f"{name} accuracy through the load balancer, {len(labels):,} test images"] = f"{100 * accuracy:.2f}%"
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=1e-9)
    for container in stack.containers("api"):
        assert stack.served_requests(container) > 0, f"{container} took no traffic"


def test_a_replica_that_dies_costs_no_request_and_comes_back(
    stack: Stack, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images = digits[0][:200]
    with httpx.Client(base_url=stack.lb_url, timeout=30) as client:
        labels = [
            p["label"]
            for p in client.post(
                "/classify", content=images.tobytes(), headers={"Content-Type": "application/octet-stream"}
            ).json()["predictions"]
        ]
    first, second = stack.containers("api")

    # A crash: the replica's process killed from outside, as the kernel's OOM killer would. Docker restarts it.
    restarts = stack.inspect(first)["RestartCount"]
    with Traffic(stack.lb_url, images, labels) as crash:
        time.sleep(2)
        subprocess.run(["kill", "-KILL", str(stack.inspect(first)["State"]["Pid"])], check=True)
        back = wait_for(
            f"{first} restarted and healthy",
            lambda: stack.inspect(first)["RestartCount"] == restarts + 1 and healthy(stack, first),
            90,
        )
        wait_for(f"{first} serving again", lambda: stack.served_requests(first) > 0, 15)
        time.sleep(1)
    assert stack.inspect(first)["RestartCount"] == restarts + 1
    FIGURES["replica crash (SIGKILL to its process)"] = (
        f"{crash.sent} requests through the load balancer, {len(crash.failures)} failed; healthy again in {back:.1f} s"
    )
    assert crash.failures == [] and crash.sent > 100

    # `docker kill`: Docker takes it as an operator's stop and keeps the container down (its restart policy is
    # set aside until the next start); the other replica answers everything, and `up` brings it back.
    with Traffic(stack.lb_url, images, labels) as kill:
        time.sleep(2)
        stack.docker("kill", second)
        time.sleep(5)
        assert stack.inspect(second)["State"]["Running"] is False
    FIGURES["`docker kill` of a replica"] = (
        f"{kill.sent} requests through the load balancer, {len(kill.failures)} failed"
    )
    assert kill.failures == [] and kill.sent > 100
    stack.compose("up", "--detach", "--wait")
    assert healthy(stack, second)


def test_a_new_replica_takes_traffic_without_restarting_the_load_balancer(
    stack: Stack, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    lb = stack.containers("lb")[0]
    lb_started = stack.inspect(lb)["State"]["StartedAt"]
    before = set(stack.containers("api"))
    stack.compose("up", "--detach", "--wait", "--scale", "api=3")
    added = sorted(set(stack.containers("api")) - before)
    assert len(added) == 1 and healthy(stack, added[0])
    with Traffic(stack.lb_url, digits[0][:200], None) as traffic:
        seconds = wait_for(f"{added[0]} takes traffic", lambda: stack.served_requests(added[0]) > 0, 10)
    FIGURES["scale 2 -> 3: new replica's first request after `up --scale` returned"] = f"{seconds:.1f} s"
    assert traffic.failures == []
    assert stack.inspect(lb)["State"]["StartedAt"] == lb_started and stack.inspect(lb)["RestartCount"] == 0


def test_a_new_model_in_the_volume_and_sighup_reach_every_replica_without_a_failed_request(
    stack: Stack, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    replicas = stack.containers("api")
    old = stack.model_sha256(replicas[0], "mnist")
    # A new MNIST model, trained by the train image into a staging folder of the volume, then moved in place.
    stack.compose(
        "run", "--rm", "--no-deps", "train", "sh", "-c",
        "sae-train train --dataset mnist --epochs 1 --pretrain-epochs 1 --seed 1 --out /artifacts/.incoming"
        " && mv /artifacts/mnist /artifacts/.previous && mv /artifacts/.incoming/mnist /artifacts/mnist"
        " && rm -rf /artifacts/.previous /artifacts/.incoming",
    )  # fmt: skip
    with Traffic(stack.lb_url, digits[0][:200], None) as traffic:
        time.sleep(1)
        started = time.monotonic()
        stack.compose("kill", "--signal", "HUP", "api")
        for container in replicas:

            def reloaded(container: str = container) -> bool:
                return stack.model_sha256(container, "mnist") != old

            wait_for(f"{container} serves the new model", reloaded, 60)
        seconds = time.monotonic() - started
        time.sleep(1)
    new = {stack.model_sha256(container, "mnist") for container in replicas}
    assert len(new) == 1 and old not in new
    FIGURES["new model + SIGHUP on 3 replicas"] = (
        f"all serving it {seconds:.1f} s after the signal; {traffic.sent} requests meanwhile, "
        f"{len(traffic.failures)} failed"
    )
    assert traffic.failures == []


SLOW_UPLOAD = """
import http.client, sys, time
pixels = bytes(784 * 8)
connection = http.client.HTTPConnection(sys.argv[1], 8000, timeout=60)
connection.putrequest("POST", "/classify")
connection.putheader("Content-Type", "application/octet-stream")
connection.putheader("Content-Length", str(len(pixels)))
connection.endheaders()
print("sending", flush=True)
for start in range(0, len(pixels), 784):
    connection.send(pixels[start : start + 784])
    time.sleep(0.5)
response = connection.getresponse()
print(response.status, len(response.read()), flush=True)
"""


def test_down_lets_in_flight_requests_finish_and_every_container_exits_zero(stack: Stack) -> None:
    containers = stack.containers("api") + stack.containers("lb")
    exit_codes: dict[str, str] = {}

    def wait(container: str) -> None:
        exit_codes[container] = stack.docker("wait", container, timeout=120).strip()

    waiters = [threading.Thread(target=wait, args=(c,)) for c in containers]
    # Each from this machine to the replica's address on the compose network: a client inside the container would
    # be killed with it, possibly before it has read the answer the replica sent.
    uploads = [
        subprocess.Popen([sys.executable, "-c", SLOW_UPLOAD, address], stdout=subprocess.PIPE, text=True)
        for address in (stack.address(container) for container in stack.containers("api"))
    ]
    for thread in waiters:
        thread.start()
    for upload in uploads:
        assert upload.stdout is not None and upload.stdout.readline().strip() == "sending"
    started = time.monotonic()
    stack.compose("down", timeout=120)  # volumes kept, as a user's `down` keeps them
    FIGURES["`docker compose down` with a 4 s upload in flight on each replica"] = f"{time.monotonic() - started:.1f} s"
    for thread in waiters:
        thread.join(timeout=10)
    answers = [upload.communicate(timeout=10)[0].split() for upload in uploads]
    assert all(answer[:1] == ["200"] and int(answer[1]) > 0 for answer in answers), answers
    assert exit_codes == dict.fromkeys(containers, "0")
