"""Model versions: the layout, version policies, pinning a version, and the model repository API
(index, load, unload) in one process. tests/service/core/test_repository_server.py drives real servers."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.core.versions import Policies, VersionPolicy
from tests.service.apps import make_settings
from tests.service.model_versions import DIGITS, add_version, expected_probabilities

KEY = {"Authorization": "Bearer admin"}


@pytest.fixture
def versioned(tiny_artifacts: Path) -> Path:
    """mnist: version 1 in the flat layout (its folder's top), versions 2 and 3 in folders of their own."""
    add_version(tiny_artifacts, 2, seed=2)
    add_version(tiny_artifacts, 3, seed=3)
    return tiny_artifacts


def client_for(artifacts: Path, **settings: object) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(artifacts, **settings))) as client:
        yield client


def classify(client: TestClient, query: str = "", **headers: str) -> tuple[int, dict[str, object], dict[str, str]]:
    response = client.post(
        f"/classify?top_k=1{query}",
        content=DIGITS.tobytes(),
        headers={"Content-Type": "application/octet-stream", **headers},
    )
    return response.status_code, response.json(), dict(response.headers)


def probabilities(answer: dict[str, object]) -> np.ndarray:
    predictions = answer["predictions"]
    assert isinstance(predictions, list)
    return np.array([list(p["probabilities"].values()) for p in predictions])


def versions_listed(client: TestClient, name: str = "mnist") -> dict[int, str]:
    model = next(m for m in client.get("/models", headers=KEY).json()["models"] if m["name"] == name)
    return {v["version"]: v["state"] for v in model["versions"]}


def test_the_default_policy_serves_the_newest_version_and_every_answer_names_it(versioned: Path) -> None:
    for client in client_for(versioned):
        status, answer, headers = classify(client)
        assert status == 200 and answer["model_version"] == 3 and headers["x-model-version"] == "3"
        np.testing.assert_allclose(probabilities(answer), expected_probabilities(versioned / "mnist" / "3"), atol=1e-5)
        assert versions_listed(client) == {1: "UNAVAILABLE", 2: "UNAVAILABLE", 3: "READY"}
        model = next(m for m in client.get("/models").json()["models"] if m["name"] == "mnist")
        assert model["version"] == 3 and model["versions"][0]["reason"] == "not in the version policy latest:1"
        assert all(v["test_accuracy"] == 0.5 and v["weights_sha256"] for v in model["versions"])  # cards read from disk
        for path, accept in (("/embed", "application/x-npy"), ("/reconstruct", "image/png")):
            response = client.post(
                path, content=DIGITS.tobytes(), headers={"Content-Type": "application/octet-stream", "Accept": accept}
            )
            assert response.status_code == 200 and response.headers["x-model-version"] == "3"
        status, answer, _ = classify(client, "&version=1")
        assert status == 503 and "version 1 is not loaded: not in the version policy latest:1" in str(answer["detail"])


def test_a_flat_checkpoint_alone_is_version_1(tiny_artifacts: Path) -> None:
    for client in client_for(tiny_artifacts):
        status, answer, _ = classify(client)
        assert status == 200 and answer["model_version"] == 1
        assert client.get("/v2/models/mnist").json()["versions"] == ["1"]


def test_with_every_version_loaded_each_answers_when_pinned(versioned: Path) -> None:
    for client in client_for(versioned, version_policy="all"):
        for version, folder in (
            (1, versioned / "mnist"),
            (2, versioned / "mnist" / "2"),
            (3, versioned / "mnist" / "3"),
        ):
            status, answer, headers = classify(client, f"&version={version}")
            assert status == 200 and answer["model_version"] == version and headers["x-model-version"] == str(version)
            np.testing.assert_allclose(probabilities(answer), expected_probabilities(folder), atol=1e-5)
            infer = client.post(
                f"/v2/models/mnist/versions/{version}/infer",
                json={
                    "inputs": [
                        {"name": "images", "shape": [4, 784], "datatype": "UINT8", "data": DIGITS.ravel().tolist()}
                    ]
                },
            ).json()
            assert infer["model_version"] == str(version)
            v2_probabilities = np.array(next(o for o in infer["outputs"] if o["name"] == "probabilities")["data"])
            np.testing.assert_allclose(v2_probabilities.reshape(4, 10), expected_probabilities(folder), atol=1e-5)
            ready = client.get(f"/v2/models/mnist/versions/{version}/ready").json()
            assert ready == {"name": "mnist", "version": str(version), "ready": True}
        assert client.get("/v2/models/mnist").json()["versions"] == ["1", "2", "3"]
        model = next(m for m in client.get("/models").json()["models"] if m["name"] == "mnist")
        assert len({v["weights_sha256"] for v in model["versions"]}) == 3  # three models, not one three times
        answers = [probabilities(classify(client, f"&version={v}")[1]) for v in (1, 2, 3)]
        assert not np.allclose(answers[0], answers[1]) and not np.allclose(answers[1], answers[2])
        assert classify(client)[1]["model_version"] == 3
        status, answer, _ = classify(client, "&version=9")
        assert status == 404 and answer["detail"] == "model 'mnist' has no version 9; loaded versions: 1, 2, 3"
        for bad in ("two", "0", "-1", "1.5", "²"):
            status, answer, _ = classify(client, f"&version={bad}")
            assert status == 400 and "is not a version number" in str(answer["detail"]), bad
        response = client.get("/v2/models/mnist/versions/7")
        assert response.status_code == 404 and "has no version 7" in response.json()["error"]


def test_policies_per_model_and_their_syntax(versioned: Path) -> None:
    for client in client_for(versioned, version_policy="latest:2,mnist=specific:1:3"):
        assert versions_listed(client) == {1: "READY", 2: "UNAVAILABLE", 3: "READY"}
    for client in client_for(versioned, version_policy="mnist=latest:2"):
        assert versions_listed(client) == {1: "UNAVAILABLE", 2: "READY", 3: "READY"}
    assert Policies.parse(["latest:1", "mnist=all"]).of("mnist") == VersionPolicy("all")
    for bad in ("newest:1", "latest:0", "specific", "all:2", "=latest:1", "latest:x"):
        with pytest.raises(ValidationError, match="version policy"):
            make_settings(versioned, version_policy=bad)


def test_a_specific_version_missing_from_disk_is_listed_with_the_reason(versioned: Path) -> None:
    for client in client_for(versioned, version_policy="specific:2:5"):
        assert versions_listed(client) == {1: "UNAVAILABLE", 2: "READY", 3: "UNAVAILABLE", 5: "UNAVAILABLE"}
        model = next(m for m in client.get("/models").json()["models"] if m["name"] == "mnist")
        assert model["versions"][-1]["reason"] == f"version 5 not found in {versioned / 'mnist'}"


def test_the_repository_api_needs_keys_and_a_key(versioned: Path) -> None:
    for client in client_for(versioned):
        response = client.post("/v2/repository/index")
        assert response.status_code == 403 and "set SAE_API_KEYS" in response.json()["error"]
    for client in client_for(versioned, api_keys="admin"):
        assert client.post("/v2/repository/models/mnist/load").status_code == 401
        assert client.post("/v2/repository/index", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_load_beside_promote_roll_back_and_reload_the_policy(versioned: Path) -> None:
    shutil.rmtree(versioned / "mnist" / "3")
    for client in client_for(versioned, api_keys="admin"):
        assert classify(client, **KEY)[1]["model_version"] == 2
        index = client.post("/v2/repository/index", headers=KEY).json()
        assert {(e["name"], e["version"], e["state"]) for e in index} == {
            ("mnist", "1", "UNAVAILABLE"),
            ("mnist", "2", "READY"),
            ("fashion-mnist", "1", "READY"),
        }
        assert client.post("/v2/repository/index", headers=KEY, json={"ready": True}).json() == [
            e for e in index if e["state"] == "READY"
        ]
        # A version trained while serving is not served until loaded: the served version stays.
        add_version(versioned, 3, seed=3)
        assert classify(client, **KEY)[1]["model_version"] == 2
        load_3 = client.post("/v2/repository/models/mnist/load", headers=KEY, json={"parameters": {"version": 3}})
        assert load_3.status_code == 200 and load_3.json() == {}
        assert versions_listed(client) == {1: "UNAVAILABLE", 2: "READY", 3: "READY"}
        assert classify(client, **KEY)[1]["model_version"] == 3  # promoted: the newest loaded
        assert classify(client, "&version=2", **KEY)[1]["model_version"] == 2  # the old one, pinned
        unload_3 = client.post("/v2/repository/models/mnist/unload", headers=KEY, json={"parameters": {"version": 3}})
        assert unload_3.status_code == 200
        assert classify(client, **KEY)[1]["model_version"] == 2  # rolled back
        status, answer, _ = classify(client, "&version=3", **KEY)
        assert status == 503 and "unloaded through the repository API" in str(answer["detail"])
        # Unloading the model takes every version away; loading it applies its policy afresh.
        assert client.post("/v2/repository/models/mnist/unload", headers=KEY).status_code == 200
        status, answer, _ = classify(client, **KEY)
        assert status == 503 and "unloaded through the repository API" in str(answer["detail"])
        assert client.get("/health/ready").json()["models"] == ["fashion-mnist"]
        assert versions_listed(client) == {1: "UNAVAILABLE", 2: "UNAVAILABLE", 3: "UNAVAILABLE"}
        assert client.post("/v2/repository/models/mnist/load", headers=KEY).status_code == 200
        assert classify(client, **KEY)[1]["model_version"] == 3 and versions_listed(client)[3] == "READY"
        assert versions_listed(client) == {1: "UNAVAILABLE", 2: "UNAVAILABLE", 3: "READY"}
        # A reload reads the repository anew: the API's changes go, the policy stays.
        client.post("/v2/repository/models/mnist/load", headers=KEY, json={"parameters": {"version": 1}})
        assert versions_listed(client)[1] == "READY"
        assert client.post("/admin/reload", headers=KEY).json()["swapped"]
        assert versions_listed(client) == {1: "UNAVAILABLE", 2: "UNAVAILABLE", 3: "READY"}


def test_a_version_that_fails_to_load_changes_nothing_and_says_why(versioned: Path) -> None:
    for client in client_for(versioned, api_keys="admin"):
        broken = add_version(versioned, 4, seed=4)
        (broken / "model.safetensors").write_bytes(b"not weights")
        before = client.get("/models", headers=KEY).json()
        response = client.post("/v2/repository/models/mnist/load", headers=KEY, json={"parameters": {"version": 4}})
        assert response.status_code == 400
        error = response.json()["error"]
        assert "version 4: " in error and "does not match its card" in error and "still serves versions [3]" in error
        assert client.get("/models", headers=KEY).json() == before
        assert classify(client, **KEY)[1]["model_version"] == 3
        # Loading the whole model, whose policy (latest:1) now picks the broken version 4, fails the same way.
        response = client.post("/v2/repository/models/mnist/load", headers=KEY)
        assert response.status_code == 400 and "still serves versions [3]" in response.json()["error"]
        assert classify(client, **KEY)[1]["model_version"] == 3


def test_repository_requests_that_are_wrong(versioned: Path) -> None:
    for client in client_for(versioned, api_keys="admin"):
        cases = [
            ("/v2/repository/models/nope/load", None, 404, "unknown model 'nope' in the repository"),
            ("/v2/repository/models/mnist/load", {"parameters": {"version": 8}}, 400, "has no version 8"),
            ("/v2/repository/models/mnist/load", {"parameters": {"version": "x"}}, 400, "not a version number"),
            ("/v2/repository/models/mnist/load", {"parameters": {"version": True}}, 400, "not a version number"),
            ("/v2/repository/models/mnist/load", {"parameters": {"config": "{}"}}, 400, "unknown parameters"),
            ("/v2/repository/models/mnist/load", [1], 400, "must be a JSON object"),
            ("/v2/repository/models/mnist/unload", {"parameters": 3}, 400, '"parameters" must be an object'),
            ("/v2/repository/index", {"ready": "yes"}, 400, '"ready" must be true or false'),
        ]
        for path, body, status, text in cases:
            response = client.post(path, headers=KEY, json=body)
            assert response.status_code == status and text in response.json()["error"], (path, body, response.text)
        response = client.post(
            "/v2/repository/index", headers={**KEY, "Content-Type": "application/json"}, content=b"{"
        )
        assert response.status_code == 400 and "not valid" in response.json()["error"]
        assert classify(client, **KEY)[1]["model_version"] == 3


def test_unloading_the_only_loaded_version_says_why_and_is_no_failure(versioned: Path) -> None:
    for client in client_for(versioned, api_keys="admin"):
        unload = client.post("/v2/repository/models/mnist/unload", headers=KEY, json={"parameters": {"version": 3}})
        assert unload.status_code == 200  # latest:1 served only version 3: mnist now serves none
        for query in ("&version=3", ""):
            status, answer, _ = classify(client, query, **KEY)
            assert status == 503 and "unloaded through the repository API" in str(answer["detail"]), query
        status, answer, _ = classify(client, "&version=2", **KEY)
        assert status == 503 and "not in the version policy latest:1" in str(answer["detail"])
        status, answer, _ = classify(client, "&version=9", **KEY)
        assert status == 404 and "has no version 9" in str(answer["detail"])  # none served, and none such
        ready = client.get("/health/ready").json()
        assert ready["models"] == ["fashion-mnist"] and ready["failed"] == {}
        models = {m["name"]: m for m in client.get("/models", headers=KEY).json()["models"]}
        assert models["mnist"]["error"] == "unloaded through the repository API"
