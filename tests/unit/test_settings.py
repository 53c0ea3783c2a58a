"""Operator settings: which namespaces the resync lists and which it takes."""

import pytest

from mlops_operator.settings import OperatorSettings


@pytest.mark.parametrize(
    ("namespaces", "scopes", "taken", "left"),
    [
        ([], [None], ["models", "team-a"], []),
        (["models", "serving"], ["models", "serving"], ["models", "serving"], ["team-a"]),
        (["team-*", "models"], [None], ["team-a", "team-b2", "models"], ["teams", "default"]),
        (["ml-[ab]"], [None], ["ml-a", "ml-b"], ["ml-c"]),
    ],
)
def test_namespace_names_and_patterns(
    namespaces: list[str], scopes: list[str | None], taken: list[str], left: list[str]
) -> None:
    settings = OperatorSettings(namespaces=namespaces)
    assert settings.list_scopes() == scopes
    assert all(settings.watches(n) for n in taken)
    assert not any(settings.watches(n) for n in left)


def test_patterns_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_NAMESPACES", '["team-*"]')
    assert OperatorSettings().watches("team-x")
