"""Argo CD's health checks of the three kinds, run as Argo CD runs them: the Lua of
helm/argocd/resource_customizations/mlops.dev/<Kind>/health.lua, on a real Lua
runtime (lupa), with the object as the global `obj`.

With MLOPS_ARGOCD_TESTDATA=1, each object an integration test checks is also written
to that kind's testdata/, and listed with its health in the kind's health_test.yaml,
the fixtures Argo CD's own test harness reads: objects the real operator wrote, not
hand-made ones.
"""

import os
import re
from pathlib import Path
from typing import Any

import yaml
from lupa import LuaRuntime

CHECKS = Path(__file__).resolve().parent.parent / "helm/argocd/resource_customizations/mlops.dev"


def _table(lua: LuaRuntime, value: Any) -> Any:
    """Python data as Lua tables: lists 1-based, as Argo CD's conversion gives them."""
    if isinstance(value, dict):
        return lua.table_from({k: _table(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_table(lua, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """The status (Healthy, Progressing, Degraded, Suspended) and message Argo CD shows."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    script = (CHECKS / obj["kind"] / "health.lua").read_text()
    lua.globals().obj = _table(lua, obj)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"])


def checked(obj: dict[str, Any], status: str, message: str | None = None) -> None:
    """Assert the health Argo CD would show (the message, if given); record the object
    as a fixture when MLOPS_ARGOCD_TESTDATA=1."""
    found, said = health(obj)
    assert found == status, (found, said)
    if message is not None:
        assert said == message, said
    if os.environ.get("MLOPS_ARGOCD_TESTDATA") != "1":
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "test").split("::")[-1].split(" ")[0]
    name = re.sub(r"[^a-z0-9]+", "-", f"{status}-{obj['metadata']['name']}-{test}".lower())
    meta = {k: v for k, v in obj["metadata"].items() if k not in DROPPED}
    kind = CHECKS / obj["kind"]
    (kind / "testdata").mkdir(exist_ok=True)
    path = f"testdata/{name[:120]}.yaml"
    (kind / path).write_text(yaml.safe_dump({**obj, "metadata": meta}))
    listed = kind / "health_test.yaml"
    tests = yaml.safe_load(listed.read_text())["tests"] if listed.exists() else []
    tests = [t for t in tests if t["inputPath"] != path]
    tests.append({"healthStatus": {"status": found, "message": said}, "inputPath": path})
    listed.write_text(yaml.safe_dump({"tests": sorted(tests, key=lambda t: t["inputPath"])}))


DROPPED = {"managedFields", "uid", "resourceVersion", "creationTimestamp"}
"""Metadata that says nothing to a health check and changes with every run."""
