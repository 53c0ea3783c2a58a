"""`mlops-operator` fails at once, in one line, when it cannot start: no cluster is
needed to see it (a running operator would retry a failed startup every minute)."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def taken() -> Iterator[int]:
    """A port this test holds."""
    with socket.create_server(("0.0.0.0", 0)) as held:  # noqa: S104 - as the operator binds
        yield int(held.getsockname()[1])


def operator(**env: str) -> subprocess.CompletedProcess[str]:
    settings = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    return subprocess.run(
        [sys.executable, "-m", "mlops_operator.cli"],
        env={**settings, "MLOPS_LIVENESS_PORT": "0", "MLOPS_METRICS_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("setting", ["MLOPS_METRICS_PORT", "MLOPS_LIVENESS_PORT"])
def test_a_port_in_use_exits_at_once_saying_which(taken: int, setting: str) -> None:
    done = operator(**{setting: str(taken)})
    assert done.returncode == 1
    what = setting.removeprefix("MLOPS_").removesuffix("_PORT").lower()
    assert done.stderr.strip().splitlines() == [
        f"mlops-operator: cannot listen on the {what} port "
        f"{'0.0.0.0:' if what == 'liveness' else ''}{taken}: Address already in use"
    ]


def test_invalid_settings_exit_naming_the_setting() -> None:
    done = operator(MLOPS_RESYNC_SECONDS="soon")
    assert done.returncode == 2
    assert "invalid settings" in done.stderr
    assert "resync_seconds" in done.stderr
