"""The README's quickstart, run as written against a real `sae-serve`, so the front page cannot rot.

Between `<!-- quickstart -->` and `<!-- /quickstart -->`, every `sh` block is a command and the fenced block
after it is its documented answer. Each command runs with bash against a server on a free loopback port and
must answer what the README shows: the same status, headers and JSON keys, the same labels, class names and
versions (every value but the floating-point ones), and the same lines of text.
"""

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from models.layout import checkpoint_versions
from tests.docs.scripts import ROOT
from tests.servers import free_port, require_trained_artifacts, start_server

README = ROOT / "README.md"
HTTP_PORT, GRPC_PORT = "127.0.0.1:8000", "127.0.0.1:8001"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
# Headers whose value is the same on every run; the others (date, request id, timings) need only be present.
STABLE_HEADERS = ("content-type", "x-model-version", "x-image-count")
BRACKET = re.compile(r"([\[\]()])")
FLOAT = re.compile(r"^-?(\d+\.\d*|\.\d+)(e-?\d+)?$|^-?\d+e-?\d+$", re.I)


@dataclass(frozen=True)
class Step:
    command: str
    answer: str


def quickstart_steps(readme: str) -> list[Step]:
    """The commands of the quickstart section and the answer documented after each."""
    start, end = readme.find("<!-- quickstart -->"), readme.find("<!-- /quickstart -->")
    assert 0 <= start < end, "README.md has no <!-- quickstart --> ... <!-- /quickstart --> section"
    blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(readme[start:end])]
    steps = []
    for i, (language, text) in enumerate(blocks):
        if language != "sh":
            continue
        assert i + 1 < len(blocks) and blocks[i + 1][0] != "sh", f"quickstart command without an answer:\n{text}"
        steps.append(Step(text, blocks[i + 1][1]))
    return steps


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP head (the command prints something else)
    headers: dict[str, str]
    rest: str


def parse_answer(output: str) -> Answer:
    """Split what a command printed into an HTTP head (curl -i or -D -), if any, and the rest."""
    text = output.replace("\r\n", "\n")
    while text.startswith("HTTP/") and " 100 " in text.split("\n", 1)[0]:  # curl's interim 100 Continue
        text = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    if not text.startswith("HTTP/"):
        return Answer(None, {}, text.strip())
    head, _, rest = text.partition("\n\n")
    status_line, *lines = head.split("\n")
    headers = {}
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, rest.strip())


def differences(documented: Any, actual: Any, where: str = "answer") -> list[str]:
    """Where `actual` departs from the documented JSON: keys, lengths, types, and any value but a float."""
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"[:200]]
        if set(documented) != set(actual):
            return [f"{where}: keys {sorted(actual)}, documented {sorted(documented)}"]
        return [d for key in documented for d in differences(documented[key], actual[key], f"{where}.{key}")]
    if isinstance(documented, list):
        if not isinstance(actual, list) or len(actual) != len(documented):
            return [f"{where}: expected a list of {len(documented)}, got {actual!r}"[:200]]
        return [
            d
            for i, (a, b) in enumerate(zip(documented, actual, strict=True))
            for d in differences(a, b, f"{where}[{i}]")
        ]
    if isinstance(documented, float):
        ok = isinstance(actual, int | float) and not isinstance(actual, bool)
        return [] if ok else [f"{where}: expected a number, got {actual!r}"]
    if type(documented) is not type(actual) or documented != actual:
        return [f"{where}: {actual!r}, documented {documented!r}"]
    return []


def text_differences(documented: str, actual: str) -> list[str]:
    """Line by line, word by word: every word equal but floating-point numbers, which need only be numbers."""
    doc_lines, act_lines = documented.splitlines(), actual.splitlines()
    if len(doc_lines) != len(act_lines):
        return [f"{len(act_lines)} lines, documented {len(doc_lines)}:\n{actual}"]
    found = []
    for doc_line, act_line in zip(doc_lines, act_lines, strict=True):
        doc_words, act_words = BRACKET.sub(r" \1 ", doc_line).split(), BRACKET.sub(r" \1 ", act_line).split()
        same = len(doc_words) == len(act_words) and all(
            d == a or (FLOAT.match(d.rstrip(",")) and FLOAT.match(a.rstrip(",")))
            for d, a in zip(doc_words, act_words, strict=False)
        )
        if not same:
            found.append(f"line {act_line!r}, documented {doc_line!r}")
    return found


def answer_differences(documented: str, output: str) -> list[str]:
    """Everything in what a command printed that does not match the README's answer."""
    doc, act = parse_answer(documented), parse_answer(output)
    if doc.status != act.status:
        return [f"status {act.status}, documented {doc.status}"]
    found = [f"header {name!r} missing" for name in doc.headers if name not in act.headers]
    found += [
        f"header {name}: {act.headers[name]!r}, documented {doc.headers[name]!r}"
        for name in STABLE_HEADERS
        if name in doc.headers and name in act.headers and act.headers[name] != doc.headers[name]
    ]
    if "server-timing" in doc.headers and "server-timing" in act.headers:
        parts = [re.sub(r"dur=[\d.]+", "dur", p.strip()) for p in doc.headers["server-timing"].split(",")]
        shown = [re.sub(r"dur=[\d.]+", "dur", p.strip()) for p in act.headers["server-timing"].split(",")]
        if parts != shown:
            found.append(f"server-timing {act.headers['server-timing']!r}, documented {doc.headers['server-timing']!r}")
    try:
        documented_json = json.loads(doc.rest)
    except ValueError:
        return found + text_differences(doc.rest, act.rest)
    try:
        actual_json = json.loads(act.rest)
    except ValueError:
        return [*found, f"documented JSON, got {act.rest[:200]!r}"]
    return found + differences(documented_json, actual_json)


STEPS = quickstart_steps(README.read_text())


def test_the_quickstart_has_a_command_for_each_main_endpoint() -> None:
    commands = "\n".join(step.command for step in STEPS)
    for route in ("/classify", "/reconstruct", "/embed", "/v2/models/mnist/infer", "tritonclient.grpc"):
        assert route in commands, route
    assert HTTP_PORT in commands and GRPC_PORT in commands


def test_every_sample_the_quickstart_posts_is_shipped() -> None:
    named = {m.group(0) for step in STEPS for m in re.finditer(r"docs/samples/[\w.-]+\.(png|json)", step.command)}
    named |= {f"docs/samples/{name}.png" for name in ("digit-7", "digit-2")}  # posted by the gRPC example
    assert named
    for path in sorted(named):
        assert (ROOT / path).is_file(), f"{path} is missing; run .venv/bin/python docs/samples/make_samples.py"


def test_a_wrong_label_a_missing_header_or_key_and_a_changed_line_are_caught() -> None:
    documented = 'HTTP/1.1 200 OK\nx-model-version: 1\nserver-timing: forward;dur=1.0\n\n{"label": 7, "p": 0.9}'
    assert answer_differences(documented, documented.replace("dur=1.0", "dur=2.5").replace("0.9", "0.8")) == []
    assert answer_differences(documented, documented.replace('"label": 7', '"label": 1'))
    assert answer_differences(documented, documented.replace("x-model-version: 1\n", ""))
    assert answer_differences(documented, documented.replace('"p"', '"q"'))
    assert answer_differences(documented, documented.replace("200 OK", "404 Not Found"))
    assert answer_differences("True mnist 1\n[7 2] [0.99 0.98]", "True mnist 1\n[7 2] [0.97 0.99]") == []
    assert answer_differences("True mnist 1\n[7 2] [0.99 0.98]", "True mnist 1\n[7 3] [0.97 0.99]")


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that looks like the repository root to the commands (docs/ and .venv/), where they may write."""
    folder = tmp_path_factory.mktemp("quickstart")
    (folder / "docs").symlink_to(ROOT / "docs")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real `sae-serve` with the trained models as a fresh clone's `make run` has them: version 1 of each."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    trained = require_trained_artifacts()
    for name in ("mnist", "fashion-mnist"):
        versions = checkpoint_versions(trained / name)
        shutil.copytree(versions[min(versions)], artifacts / name / "1")
    grpc_port = free_port()
    process, url = start_server(artifacts, SAE_GRPC_PORT=str(grpc_port))
    yield url.removeprefix("http://"), f"127.0.0.1:{grpc_port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS, ids=[step.command.split("\n")[0][:60] for step in STEPS])
def test_the_quickstart_command_answers_as_documented(step: Step, ports: tuple[str, str], quickstart_dir: Path) -> None:
    http, grpc = ports
    script = step.command.replace(HTTP_PORT, http).replace(GRPC_PORT, grpc)
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=quickstart_dir, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert answer_differences(step.answer, done.stdout) == [], done.stdout
