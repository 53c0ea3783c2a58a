"""Shared fixtures: a real iris classifier bundled once per session, and app clients."""

import importlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from mlops_contract.digest import file_digest
from mlops_contract.settings import ServingSettings
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_serving import packing
from mlops_serving.app import create_app


@dataclass(frozen=True)
class Iris:
    frame: pd.DataFrame
    target: np.ndarray[Any, Any]
    model: LogisticRegression


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    digest: str


@pytest.fixture(scope="session")
def iris() -> Iris:
    frame, target = load_iris(return_X_y=True, as_frame=True)
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    model = LogisticRegression(max_iter=1000).fit(frame.to_numpy(), target)
    return Iris(frame, target.to_numpy(), model)


@pytest.fixture(scope="session")
def iris_bundle(iris: Iris, tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    out = tmp_path_factory.mktemp("bundles") / "iris-1.tar.gz"
    packing.build(iris.model, iris.frame, out, name="iris", version="1")
    return BuiltBundle(out, file_digest(out))


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_for(tmp_path: Path, iris_bundle: BuiltBundle) -> ClientFactory:
    """An httpx client on the app in-process, its lifespan run (the model loads)."""

    @asynccontextmanager
    async def open_client(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        values: dict[str, Any] = {
            "model_uri": f"file://{iris_bundle.path}",
            "model_digest": iris_bundle.digest,
            "cache_dir": tmp_path / "cache",
        }
        values.update(overrides)
        app = create_app(ServingSettings(**values))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://serving"
            ) as client,
        ):
            yield client

    return open_client


def require(module: str) -> Any:
    """Import an optional extra's module; skip without it, unless MLOPS_REQUIRE_EXTRAS=1 (CI)."""
    if os.environ.get("MLOPS_REQUIRE_EXTRAS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(
        module, reason=f"{module} is an optional extra; MLOPS_REQUIRE_EXTRAS=1 requires it"
    )
