"""Argo CD's health checks of the three kinds, run as Argo CD runs them: the Lua of
helm/argocd/resource_customizations/mlops.dev/<Kind>/health.lua, on a real Lua
runtime (lupa), with the object as the global `obj`."""

from pathlib import Path
from typing import Any

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
