"""Write the schema the RayService manifest is validated against (tests/deploy/test_rayservice.py) from KubeRay's CRD.

    python -m tests.deploy.schemas.rayservice_schema ray.io_rayservices.yaml KUBERAY_VERSION > \
        tests/deploy/schemas/rayservice-v1.json

The CRD (ray-operator/config/crd/bases/ray.io_rayservices.yaml of KubeRay, Apache-2.0) is 1 MB. What is kept: its
`v1` openAPIV3Schema, less `status` (written by the operator) and less the two pod templates (head and worker
groups), which the test validates as PodTemplateSpecs against the Kubernetes schema itself. What is added: strictness,
as the API server's strict field validation has it: an object whose fields the CRD lists takes no other field.
"""

import json
import sys
from pathlib import Path
from typing import Any

import yaml

POD_TEMPLATE = {"type": "object", "description": "a PodTemplateSpec, validated against the Kubernetes schema"}


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict(value) for key, value in node.items()}
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


def rayservice_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    (v1,) = (v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = v1["schema"]["openAPIV3Schema"]
    del schema["properties"]["status"]
    cluster = schema["properties"]["spec"]["properties"]["rayClusterConfig"]["properties"]
    cluster["headGroupSpec"]["properties"]["template"] = POD_TEMPLATE
    cluster["workerGroupSpecs"]["items"]["properties"]["template"] = POD_TEMPLATE
    schema["properties"]["metadata"] = {"type": "object"}  # an ObjectMeta, which kubernetes_validate checks
    return {
        "$comment": f"KubeRay {version}, ray.io_rayservices.yaml, v1 (Apache-2.0); see rayservice_schema.py",
        **strict(schema),
    }


if __name__ == "__main__":
    crd = yaml.safe_load(Path(sys.argv[1]).read_text())
    json.dump(rayservice_schema(crd, sys.argv[2]), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
