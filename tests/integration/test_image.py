"""The serving image, built from serving_image/Dockerfile and run as a container.

hack/image.sh builds it (Docker where an engine runs; else podman on a Debian root
made with debootstrap). The containers run as Kubernetes would run our pods: the
image's own user, a read-only root filesystem with /tmp the only writable path,
the artifact on a read-only mount. They listen on loopback (host network).
Without a container engine the tests skip, unless MLOPS_REQUIRE_IMAGE=1 (CI).
"""

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .images import built_image, engine
from .kube import iris_bundle, wait_until
from .processes import free_port

UID = "65532"


@pytest.fixture(scope="module")
def image() -> str:
    return built_image("serving")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder with a real bundle, readable by the image's user, and its digest."""
    folder = tmp_path_factory.mktemp("models")
    out, digest = iris_bundle(folder / "iris.tar.gz")
    for path in (folder, out):  # pytest's temporary folders are private to root
        path.chmod(0o755)
    return folder, digest


def pod_like(port: int, folder: Path, digest: str) -> list[str]:
    return [
        "--network=host",
        "--read-only",
        "--tmpfs=/tmp",
        f"--volume={folder}:/models:ro",
        "--env=MLOPS_SERVING_MODEL_URI=file:///models/iris.tar.gz",
        f"--env=MLOPS_SERVING_MODEL_DIGEST={digest}",
        "--env=MLOPS_SERVING_HOST=127.0.0.1",
        f"--env=MLOPS_SERVING_PORT={port}",
        "--env=MLOPS_SERVING_WORKERS=2",
    ]


@pytest.fixture
def container(image: str, models: tuple[Path, str]) -> Iterator[tuple[str, str]]:
    folder, digest = models
    port = free_port()
    started = engine("run", "--detach", *pod_like(port, folder, digest), image)
    assert started.returncode == 0, started.stderr
    name = started.stdout.strip()
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_until(ready, f"the container to be ready ({engine('logs', name).stderr[-2000:]})", 120)
        yield name, base
    finally:
        engine("rm", "--force", name)


def test_image_serves_as_its_non_root_user_on_a_read_only_root(
    container: tuple[str, str],
) -> None:
    name, base = container
    request = urllib.request.Request(
        f"{base}/predict", data=orjson.dumps({"features": [5.1, 3.5, 1.4, 0.2]}), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert orjson.loads(answer.read())["prediction"] == 0
    assert engine("exec", name, "id", "-u").stdout.strip() == UID
    written = engine("exec", name, "touch", "/opt/venv/x")
    assert written.returncode != 0
    assert "Read-only file system" in written.stderr


def test_image_carries_no_build_tools(image: str) -> None:
    found = engine(
        "run", "--rm", "--entrypoint=sh", image, "-c",
        "for t in gcc cc g++ make pip pip3 ld; do command -v $t; done;"
        " ls /opt/venv/bin | grep -E '^(pip|easy_install)' ;"
        " /opt/venv/bin/python -c 'import pip' 2>/dev/null && echo pip-importable;"
        " /opt/venv/bin/python -c 'import setuptools' 2>/dev/null && echo setuptools-importable;"
        " true",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == ""
    config = orjson.loads(engine("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["mlops-serve"]


def test_image_refuses_a_wrong_digest_and_never_listens(
    image: str, models: tuple[Path, str]
) -> None:
    folder, digest = models
    port = free_port()
    wrong = "sha256:" + ("0" if digest[-1] != "0" else "1") * 64
    ran = engine("run", "--rm", *pod_like(port, folder, wrong), image)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "artifact rejected" in ran.stderr
    assert f"does not match the pinned {wrong}" in ran.stderr
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
