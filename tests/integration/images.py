"""The project's images, built by hack/image.sh, and the engine that runs them."""

import os
import subprocess

import pytest

from .kube import ROOT

IMAGE_SH = ROOT / "hack" / "image.sh"


def engine(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(IMAGE_SH), "engine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def built_image(name: str) -> str:
    """localhost/mlops-<name>:test, built by hack/image.sh; skips (or fails, where
    MLOPS_REQUIRE_IMAGE=1) when it cannot be built here."""
    image = f"localhost/mlops-{name}:test"
    built = subprocess.run(
        ["bash", str(IMAGE_SH), "build", name],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env={**os.environ, "IMAGE": image},
    )
    if built.returncode != 0:
        reason = f"hack/image.sh build {name} failed:\n{built.stderr[-3000:]}"
        if os.environ.get("MLOPS_REQUIRE_IMAGE") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return image
