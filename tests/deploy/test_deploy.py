"""The deployment files against the code they deploy: names, ports, commands and paths must match."""

import json
import re
import shlex
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from service.app import create_app
from service.settings import Settings
from tests.service.test_shutdown import free_port, start_server
from training.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
NGINX = (ROOT / "deploy" / "nginx.conf").read_text()
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
TRAINING_VARIABLES = {"SAE_DATA_DIR"}  # read by training/, not by the service's Settings
ROUTES = set(create_app(Settings()).openapi()["paths"])


def setting_names() -> set[str]:
    return {f"SAE_{name.upper()}" for name in Settings.model_fields} | TRAINING_VARIABLES


def check_command(argv: list[str]) -> None:
    """A console script of this project, with arguments its parser accepts."""
    if argv[:2] == ["sh", "-c"]:
        for part in argv[2].split("&&"):
            check_command(shlex.split(part))
        return
    assert argv[0] in SCRIPTS, argv
    if argv[0] == "sae-train":
        build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag


def test_compose_file_validates_against_the_compose_specification() -> None:
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(COMPOSE)


@pytest.mark.parametrize("name", sorted(COMPOSE["services"]))
def test_each_service_uses_real_settings_commands_ports_and_paths(name: str) -> None:
    service = COMPOSE["services"][name]
    if name == "lb":
        assert service["volumes"] == ["./deploy/nginx.conf:/etc/nginx/nginx.conf:ro"]
        assert service["ports"] == ["8080:8080"] and "listen 8080;" in NGINX
        return
    environment = service.get("environment", {})
    assert set(environment) <= setting_names(), set(environment) - setting_names()
    check_command(service["command"])
    if "healthcheck" in service:
        probe = " ".join(service["healthcheck"]["test"])
        path = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", probe)
        assert path is not None and path.group(2) in ROUTES
        assert path.group(1) == environment["SAE_PORT"] == service["expose"][0]
        assert f"server {name.split('-')[0]}:{environment['SAE_PORT']}" in NGINX
    if "deploy" in service:
        assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_dockerfile_runs_the_same_scripts_with_real_settings() -> None:
    assert re.search(r'^CMD \["sae-serve"\]$', DOCKERFILE, re.M)
    assert "sae-serve" in SCRIPTS
    variables = set(re.findall(r"\b(SAE_[A-Z_]+)=", DOCKERFILE))
    assert variables and variables <= setting_names()
    assert "EXPOSE 8000" in DOCKERFILE and "SAE_PORT=8000" in DOCKERFILE
    assert "/health/ready" in DOCKERFILE and "/health/ready" in ROUTES
    assert "USER sae" in DOCKERFILE and "RUN pip install ." in DOCKERFILE
    final_stage = DOCKERFILE.split("\nFROM ")[-1]
    assert "pip install" not in final_stage and "gcc" not in final_stage  # no build step in the image that runs


def nginx_for(upstreams: list[str], port: int, folder: Path) -> Path:
    """The repository's nginx.conf, listening on `port` and with the given upstream servers for `api`."""
    servers = "\n        ".join(f"server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    text = NGINX.replace("server api:8000 max_fails=1 fail_timeout=5s;", servers).replace(
        "listen 8080;", f"listen 127.0.0.1:{port};"
    )
    text = text.replace("/tmp/", f"{folder}/")
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.mark.slow
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    config = nginx_for(["127.0.0.1:9"], free_port(), tmp_path)
    result = subprocess.run([NGINX_BIN, "-t", "-c", str(config), "-e", "stderr"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@pytest.mark.slow
def test_nginx_spreads_requests_over_two_real_services(tiny_artifacts: Path, tmp_path: Path) -> None:
    servers = [start_server(tiny_artifacts) for _ in range(2)]
    port = free_port()
    config = nginx_for([url.removeprefix("http://") for _, url in servers], port, tmp_path)
    nginx = subprocess.Popen(
        [NGINX_BIN, "-c", str(config), "-e", "stderr", "-g", "daemon off;"], stderr=subprocess.PIPE
    )
    try:
        time.sleep(0.5)
        for i in range(20):
            response = httpx.get(f"http://127.0.0.1:{port}/models", headers={"X-Request-ID": f"lb-{i}"}, timeout=10)
            assert response.status_code == 200 and response.headers["x-request-id"] == f"lb-{i}"
        counts = []
        for _, url in servers:
            text = httpx.get(f"{url}/metrics").text
            line = next(
                x
                for x in text.splitlines()
                if x.startswith('sae_requests_total{model="-",route="/models",status="200"}')
            )
            counts.append(float(line.split()[-1]))
        assert sum(counts) == 20 and min(counts) >= 5  # both replicas answered
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=20)
