"""Nearest neighbours at this size: the search designs measured on the served reference set, the served path in
process and over HTTP, the memory a loaded version's reference set takes, and the k-NN vote beside the classifier.

1. Search designs, one thread, k = 10, on the MNIST model's reference set (its 55,000 training images' 256-d unit
   embeddings) with the test images' embeddings as queries: numpy's matrix product and partition (what the service
   runs), the same exact search as an ONNX Runtime graph (MatMul, TopK), faiss's exact IndexFlatIP, and faiss's
   approximate HNSW (its build time, and its recall of the exact ten). One query at a time, and 16 at a time (what
   micro-batching gives under load).
2. In process: the served operation (decode excluded: pass, search, vote) for one image, p50 and p99, with one
   thread (a worker's share of two cores) and with two.
3. Over HTTP: `sae-serve` with a worker per core, wrk sending single-image POST /similar (raw pixels, k = 10) on
   64 connections, on the same cores.
4. Memory: the resident and proportional set of a process that loaded the version and searched, against the same
   version with its reference file taken away (and part 3 gives the whole server's, its workers sharing the mapped
   file).
5. The vote's test accuracy through the served operation on all 10,000 test images, beside the classifier's.
6. The metric: the vote's validation accuracy for each k with the cosine of unit codes (served) and with the
   Euclidean distance of the raw codes.

Run: `python -m bench.serving.similar_bench` (wrk from the system's packages; faiss-cpu and onnx for part 1,
which says so where they are missing). Prints a report; no figure is asserted.
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from bench.harness import ROOT, memory_mb, start_sae_serve
from bench.serving.serve_bench import lua_script, wrk
from models.card import REFERENCE_FILE
from models.layout import newest_version
from models.reference import map_reference, nearest, normalised

K = 10


def timed(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(p50, p99) milliseconds of `repeats` runs after two warm-ups."""
    run(), run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def test_queries(artifacts: Path, model: str, count: int) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """The served embeddings (in the served runtime) of the first `count` test images, and those images."""
    from training.data import load_dataset

    images = load_dataset(model).test_images[:count].numpy()
    served = load_served(artifacts, model)
    return normalised(served.runner.run(images.reshape(len(images), -1)).layers[-1]), images


def load_served(artifacts: Path, model: str, threads: int = 1):  # type: ignore[no-untyped-def]
    from service.core.repository import load_version
    from service.core.runtime import place

    directory = newest_version(artifacts / model)
    return load_version(
        model, int(directory.name) if directory.name.isdigit() else 1, directory, place("auto", "cpu", threads)
    )


def onnx_search(vectors: NDArray[np.float32]) -> Callable[[NDArray[np.float32]], object] | None:
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    k = numpy_helper.from_array(np.array([K], np.int64), "k")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["q", "r"], ["s"], transB=1),
            helper.make_node("TopK", ["s", "k"], ["values", "indices"]),
        ],
        "search",
        [
            helper.make_tensor_value_info("q", TensorProto.FLOAT, ["B", vectors.shape[1]]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, list(vectors.shape)),
        ],
        [
            helper.make_tensor_value_info("values", TensorProto.FLOAT, ["B", K]),
            helper.make_tensor_value_info("indices", TensorProto.INT64, ["B", K]),
        ],
        [k],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda q: session.run(None, {"q": q, "r": vectors})


def designs(columns: NDArray[np.float32], queries: NDArray[np.float32]) -> list[str]:
    """Part 1's rows."""
    rows = [
        "| design | 1 query p50 (ms) | 16 queries (ms a query) | build (s) | memory (MB) | recall@10 |",
        "|---|---|---|---|---|---|",
    ]
    vectors = np.ascontiguousarray(columns.T)  # (N, dim): a vector a row, as the other designs take them
    exact = nearest(columns, queries, K)[0]
    one, sixteen = queries[:1], queries[:16]
    size = vectors.nbytes / 1e6
    for layout, matrix in (("rows (N, dim)", vectors.T), ("columns (dim, N), served", columns)):
        p50, _ = timed(lambda m=matrix: nearest(m, one, K), 200)
        batch, _ = timed(lambda m=matrix: nearest(m, sixteen, K), 50)
        rows.append(
            f"| numpy matrix product + partition, {layout} | {p50:.2f} | {batch / 16:.2f} | 0 | {size:.0f} | 1.000 |"
        )
    search = onnx_search(vectors)
    if search is None:
        rows.append("| ONNX Runtime Gemm + TopK | (onnx not installed) | | | | |")
    else:
        p50, _ = timed(lambda: search(one), 200)
        batch, _ = timed(lambda: search(sixteen), 50)
        rows.append(f"| ONNX Runtime Gemm + TopK (exact) | {p50:.2f} | {batch / 16:.2f} | 0 | {size:.0f} | 1.000 |")
    try:
        import faiss
    except ImportError:
        rows.append("| faiss | (faiss-cpu not installed) | | | | |")
        return rows
    faiss.omp_set_num_threads(1)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    p50, _ = timed(lambda: flat.search(one, K), 200)
    batch, _ = timed(lambda: flat.search(sixteen, K), 50)
    rows.append(f"| faiss IndexFlatIP (exact) | {p50:.2f} | {batch / 16:.2f} | 0 | {size:.0f} | 1.000 |")
    for m, ef in ((16, 64), (32, 128)):
        hnsw = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 2 * ef
        start = time.perf_counter()
        hnsw.add(vectors)
        build = time.perf_counter() - start
        hnsw.hnsw.efSearch = ef
        found = hnsw.search(queries, K)[1]
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found.tolist(), exact.tolist(), strict=True)])
        p50, _ = timed(lambda index=hnsw: index.search(one, K), 200)
        batch, _ = timed(lambda index=hnsw: index.search(sixteen, K), 50)
        memory = size + vectors.shape[0] * m * 2 * 4 / 1e6  # the vectors and the bottom layer's links
        rows.append(
            f"| faiss HNSW M={m}, efSearch={ef} (approximate) | {p50:.3f} | {batch / 16:.3f} | {build:.1f} | "
            f"~{memory:.0f} | {recall:.3f} |"
        )
    return rows


def in_process(artifacts: Path, model: str, image: NDArray[np.uint8]) -> list[str]:
    """Part 2's lines."""
    from service.core.forward import similar

    lines = []
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            served = load_served(artifacts, model, threads)
            p50, p99 = timed(lambda model=served: similar(model, image[None]), 500)
        lines.append(f"- {threads} thread(s): p50 {p50:.2f} ms, p99 {p99:.2f} ms (goal: p50 at most 5 ms)")
    return lines


def over_http(artifacts: Path, image: NDArray[np.uint8], seconds: float) -> list[str]:
    """Part 3's lines: three windows of `seconds` on 64 connections."""
    server = start_sae_serve(artifacts, {"SAE_GRPC_PORT": "0", "SAE_LOG_LEVEL": "warning"})
    lines = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            script = lua_script(Path(folder), "similar", image.tobytes(), "application/octet-stream")
            url = f"{server.url}/similar?k={K}"
            wrk(url, script, 64, 3)  # warm-up
            for window in range(3):
                cell = wrk(url, script, 64, seconds)
                lines.append(
                    f"- window {window + 1}: {cell.requests_per_s:,.0f} req/s, p50 {cell.p50_ms:.1f} ms, "
                    f"p99 {cell.p99_ms:.1f} ms, {cell.errors} errors (goal: at least 500 req/s)"
                )
            memory = memory_mb(server.pids())
            lines.append(f"- the server after the load: PSS {memory['pss']:.0f} MB, RSS {memory['rss']:.0f} MB")
    finally:
        server.stop()
    return lines


MEMORY_PROBE = """
import re, sys
from pathlib import Path
import numpy as np
from bench.serving.similar_bench import load_served
from service.core.forward import similar
def rollup():
    text = Path("/proc/self/smaps_rollup").read_text()
    return {k: int(v) / 1024 for k, v in re.findall(r"^(Rss|Pss):\\s+(\\d+) kB", text, re.M)}
served = load_served(Path(sys.argv[1]), sys.argv[2])
if served.reference is not None:
    for seed in range(50):
        similar(served, np.random.default_rng(seed).integers(0, 255, (1, 28, 28), dtype=np.uint8))
print(rollup()["Rss"], rollup()["Pss"])
"""


def memory(artifacts: Path, model: str) -> list[str]:
    """Part 4's lines: a process with the version and its reference set searched, one without the file."""
    with tempfile.TemporaryDirectory() as folder:
        bare = Path(folder) / model / "1"
        shutil.copytree(newest_version(artifacts / model), bare)
        (bare / REFERENCE_FILE).unlink()

        def probe(where: Path) -> tuple[float, float]:
            out = subprocess.run(
                [sys.executable, "-c", MEMORY_PROBE, str(where), model],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            return float(out[0]), float(out[1])

        with_set, without = probe(artifacts), probe(Path(folder))
    reference = map_reference(newest_version(artifacts / model) / REFERENCE_FILE, 256, 10)
    searched = reference.columns.nbytes + reference.labels.nbytes + reference.indices.nbytes
    return [
        f"- one process, the version loaded and searched 50 times: RSS {with_set[0]:.0f} MB, PSS {with_set[1]:.0f} MB; "
        f"without its reference file: RSS {without[0]:.0f} MB, PSS {without[1]:.0f} MB",
        f"- the reference set's share: RSS +{with_set[0] - without[0]:.1f} MB, PSS +{with_set[1] - without[1]:.1f} MB "
        f"(the arrays searched: {searched / 1e6:.1f} MB; its pixels are read only for /reference; goal: at most 64 MB)",
    ]


def vote_accuracy(artifacts: Path) -> list[str]:
    """Part 5's rows, through the served operation."""
    from service.core.forward import similar
    from training.data import load_dataset

    rows = [
        "| model | classifier test accuracy | k-NN vote (k) test accuracy | agree | accuracy where they agree |",
        "|---|---|---|---|---|",
    ]
    for model in ("mnist", "fashion-mnist"):
        served = load_served(artifacts, model, 2)
        data = load_dataset(model)
        images, labels = data.test_images.numpy(), data.test_labels.numpy()
        classified, voted = [], []
        for start in range(0, len(images), 256):
            result = similar(served, images[start : start + 256])
            classified.append(result.scores.argmax(1))
            voted.append(result.votes)
        label, vote = np.concatenate(classified), np.concatenate(voted)
        agree = label == vote
        k = served.card.reference.vote_k if served.card.reference else 0
        rows.append(
            f"| {model} | {np.mean(label == labels):.2%} | {np.mean(vote == labels):.2%} ({k}) | {agree.mean():.2%} | "
            f"{np.mean(label[agree] == labels[agree]):.2%} |"
        )
    return rows


def metrics(artifacts: Path) -> list[str]:
    """Part 6's rows: the validation split's vote for each k, cosine of unit codes against Euclidean of raw ones."""
    from models.layout import read_card
    from models.reference import vote
    from training.calibration import validation_split
    from training.data import load_dataset
    from training.reference import VOTE_KS

    rows = ["| model | metric | " + " | ".join(f"k={k}" for k in VOTE_KS) + " |", "|---|---|" + "---|" * len(VOTE_KS)]
    for model in ("mnist", "fashion-mnist"):
        served = load_served(artifacts, model, 2)
        card = read_card(newest_version(artifacts / model))
        reference, _ = served.searched()
        data = load_dataset(model)
        assert card.calibration is not None
        _, held = validation_split(data.train_labels, card.calibration.validation_examples, card.provenance["seed"])
        truth = data.train_labels[held].numpy()
        codes = served.runner.run(data.train_images[held].numpy().reshape(len(held), -1)).layers[-1]
        raw_reference = served.runner.run(np.asarray(reference.images)).layers[-1]
        squared = np.einsum("ij,ij->i", raw_reference, raw_reference)
        for metric in ("cosine, unit codes (served)", "Euclidean, raw codes"):
            correct = dict.fromkeys(VOTE_KS, 0)
            for start in range(0, len(codes), 256):
                chunk = codes[start : start + 256]
                if metric.startswith("cosine"):
                    found = nearest(reference.columns, normalised(chunk), max(VOTE_KS))[0]
                else:  # the smallest |q - r|^2 is the largest 2 q.r - |r|^2
                    scores = 2 * chunk @ raw_reference.T - squared
                    found = np.argsort(-scores, axis=1)[:, : max(VOTE_KS)]
                for k in VOTE_KS:
                    voted = vote(reference.labels[found[:, :k]], 10)[0]
                    correct[k] += int((voted == truth[start : start + 256]).sum())
            rows.append(
                f"| {model} | {metric} | " + " | ".join(f"{correct[k] / len(codes):.2%}" for k in VOTE_KS) + " |"
            )
    return rows


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} cores, {platform.processor() or 'cpu'}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--seconds", type=float, default=10.0, help="each HTTP window (default: 10)")
    parser.add_argument("--skip-http", action="store_true", help="leave out part 3 (no wrk)")
    args = parser.parse_args()
    reference = map_reference(newest_version(args.artifacts / args.model) / REFERENCE_FILE, 256, 10)
    queries, images = test_queries(args.artifacts, args.model, 1000)
    print(f"machine: {machine()}")
    print(
        f"reference set: {args.model}, {len(reference):,} x {reference.columns.shape[0]} float32; 1,000 test queries\n"
    )
    with threadpool_limits(1, user_api="blas"):
        print("\n".join(designs(np.asarray(reference.columns), queries)))
    print("\nthe served operation in process (pass, search, vote; one image):")
    print("\n".join(in_process(args.artifacts, args.model, images[0])))
    if not args.skip_http:
        print(f"\nover HTTP (a worker per core, wrk on the same cores, 64 connections, {args.seconds:g} s windows):")
        print("\n".join(over_http(args.artifacts, images[0], args.seconds)))
    print("\nmemory of a loaded version:")
    print("\n".join(memory(args.artifacts, args.model)))
    print("\nthe k-NN vote beside the classifier, all 10,000 test images:")
    print("\n".join(vote_accuracy(args.artifacts)))
    print("\nthe vote's validation accuracy by metric (the validation split, 5,000 images):")
    print("\n".join(metrics(args.artifacts)))


if __name__ == "__main__":
    main()
