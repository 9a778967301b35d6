"""The deployment files against the code they deploy: names, ports, commands and paths must match.

These run without a Docker engine; tests/deploy/test_compose_stack.py builds and runs the same files for real.
"""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.project import ROOT, ROUTES, SCRIPTS, check_command, compose_config, setting_names
from tests.servers import free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()
NGINX = (ROOT / "deploy" / "nginx.conf").read_text()
COMPOSE_FILES = {"cpu": ("docker-compose.yml",), "gpu": ("docker-compose.yml", "docker-compose.gpu.yml")}


def stage(name: str) -> str:
    """The text of one Dockerfile stage, from its FROM line to the next."""
    match = re.search(rf"^FROM [^\n]* AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S)
    assert match is not None, name
    return match.group(0)


@pytest.mark.parametrize("variant", sorted(COMPOSE_FILES))
def test_compose_reads_the_project_and_each_service_uses_real_commands_settings_and_routes(variant: str) -> None:
    config = compose_config(*COMPOSE_FILES[variant])
    services = config["services"]
    assert set(services) == {"train", "api", "lb"}
    for name in ("train", "api"):
        service = services[name]
        check_command(service["command"])
        assert set(service["environment"]) <= setting_names(), set(service["environment"]) - setting_names()
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
        assert {v["target"]: v["source"] for v in service["volumes"]}["/artifacts"] == "artifacts"
    api, train = services["api"], services["train"]
    assert train["build"]["target"] == "train" and api["build"]["target"] == (
        "serve-cuda" if variant == "gpu" else "serve"
    )
    assert api["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert services["lb"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert next(v for v in api["volumes"] if v["target"] == "/artifacts")["read_only"] is True
    probe = " ".join(api["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", probe)
    assert path is not None and path.group(2) in ROUTES
    assert path.group(1) == api["environment"]["SAE_PORT"] == api["expose"][0]
    assert f"set $sae_api api:{api['environment']['SAE_PORT']};" in NGINX
    grace = int(api["environment"]["SAE_GRACEFUL_SHUTDOWN_S"])
    assert api["stop_grace_period"] and float(api["stop_grace_period"].rstrip("s")) > grace
    lb_port = services["lb"]["ports"][0]
    assert lb_port["target"] == 8080 and "listen 8080;" in NGINX
    if variant == "gpu":
        for service in (api, train):
            assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
        assert api["environment"]["SAE_DEVICE"] == "cuda" and "--device cuda" in train["command"][2]


def test_dockerfile_runs_the_same_scripts_with_real_settings() -> None:
    assert re.search(r'^CMD \["sae-serve"\]$', stage("runtime"), re.M)
    assert "sae-serve" in SCRIPTS and "sae-train" in stage("train")
    variables = set(re.findall(r"\b(SAE_[A-Z_]+)=", DOCKERFILE))
    assert variables and variables <= setting_names()
    assert "EXPOSE 8000" in DOCKERFILE and "SAE_PORT=8000" in DOCKERFILE
    assert "/health/ready" in DOCKERFILE and "/health/ready" in ROUTES
    assert "USER sae" in stage("runtime")
    last = re.findall(r"^FROM .*$", DOCKERFILE, re.M)[-1]
    assert last == "FROM runtime AS serve"  # the default target is the service
    for name in ("runtime", "serve", "serve-cuda"):
        assert "pip install" not in stage(name) and "gcc" not in stage(name)  # no build step in an image that serves
    assert "COPY --from=deps-serve /opt/venv" in stage("serve")
    assert "COPY --from=deps-torch /opt/venv" in stage("serve-cuda")
    assert "torch" not in stage("deps") and "--require-hashes -r /tmp/requirements-serve.lock" in stage("deps")


def test_the_images_install_the_train_extra_and_the_torch_pins_of_the_makefile() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    installed = re.findall(r'"([a-z][\w.-]*(?:==|>=)[^"]+)"', stage("train") + stage("deps-torch"))
    assert sorted(re.split(r"[=<>]", r)[0] for r in installed) == sorted(re.split(r"[=<>]", r)[0] for r in extra)
    assert {r for r in extra if not r.startswith(("torch>", "torchvision"))} <= set(installed)
    pins = dict(re.findall(r"(torch|torchvision)==([\d.]+)", (ROOT / "Makefile").read_text()))
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(pins['torch'])}$", DOCKERFILE, re.M)
    assert re.search(rf"^ARG TORCHVISION_VERSION={re.escape(pins['torchvision'])}$", DOCKERFILE, re.M)


NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.mark.slow
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    text = NGINX.replace("listen 8080;", f"listen 127.0.0.1:{free_port()};").replace("/tmp/", f"{tmp_path}/")
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    result = subprocess.run([NGINX_BIN, "-t", "-c", str(config), "-e", "stderr"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr
