"""The shell scripts under hack/ and .ci/, as shellcheck reads them: a script that
cannot run here (hack/kind-e2e.sh needs Docker) is at least checked."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        if os.environ.get("MLOPS_REQUIRE_EXTRAS") == "1":
            pytest.fail("shellcheck is not installed; hack/setup.sh installs it")
        pytest.skip("shellcheck is not installed (hack/setup.sh installs it)")
    scripts = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "hack").glob("*.sh"))]
    assert "hack/kind-e2e.sh" in scripts
    checked = subprocess.run(
        ["shellcheck", "--external-sources", "--severity=warning", *scripts, ".ci/run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
