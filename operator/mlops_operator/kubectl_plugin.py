"""`kubectl mlops`: approve, reject or revoke a ModelVersion as yourself.

    kubectl mlops approve mv/iris-1 [-n NAMESPACE] [kubectl flags: --context, --as ...]
    kubectl mlops reject mv/iris-1
    kubectl mlops revoke mv/iris-1

It asks the API server who you are (`kubectl auth whoami`) and which bytes the
ModelVersion pins, and writes the three approval annotations in one request. The
API server's admission policy checks that you may approve, that the name is
yours and that the digest is the pinned one (mlops_operator/approval.py).
Installed as the console script `kubectl-mlops`, so kubectl finds it on PATH.
"""

import argparse
import os
import subprocess
import sys

from mlops_operator.approval import ANNOTATION, APPROVED_BY, APPROVED_DIGEST, KEYS

KINDS = {"mv", "modelversion", "modelversions", "modelversions.mlops.dev"}
ACTIONS = {"approve": "approved", "reject": "rejected", "revoke": None}


class PluginError(Exception):
    """What went wrong, in one line for the user."""


def model_version_name(ref: str) -> str:
    """`mv/NAME` (or any of the kind's names before the slash), or a bare NAME."""
    kind, slash, name = ref.rpartition("/")
    if (slash and kind.lower() not in KINDS) or not name:
        raise PluginError(f"{ref!r} is not a ModelVersion: write mv/NAME")
    return name


def annotations(action: str, user: str, digest: str) -> list[str]:
    """The `kubectl annotate` arguments for an action."""
    value = ACTIONS[action]
    if value is None:
        return [f"{key}-" for key in KEYS]
    return [f"{ANNOTATION}={value}", f"{APPROVED_BY}={user}", f"{APPROVED_DIGEST}={digest}"]


def _kubectl(*args: str) -> str:
    kubectl = os.environ.get("KUBECTL", "kubectl")
    try:
        # The user's own kubectl, with the user's own arguments: nothing to escape.
        done = subprocess.run(  # noqa: S603
            [kubectl, *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise PluginError(f"{kubectl} not found: set KUBECTL or put kubectl on PATH") from None
    if done.returncode != 0:
        raise PluginError(done.stderr.strip() or f"kubectl {args[0]} failed")
    return done.stdout.strip()


def run(action: str, ref: str, flags: list[str]) -> str:
    """Do it; the line to print."""
    name = model_version_name(ref)
    user = _kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", *flags)
    digest = _kubectl("get", "modelversions.mlops.dev", name, "-o",
                      "jsonpath={.spec.artifact.digest}", *flags)  # fmt: skip
    _kubectl("annotate", "--overwrite", "modelversions.mlops.dev", name,
             *annotations(action, user, digest), *flags)  # fmt: skip
    if ACTIONS[action] is None:
        return f"modelversion {name}: approval revoked by {user}"
    return f"modelversion {name} {ACTIONS[action]} by {user} ({digest})"


KUBECTL_FLAGS = (
    ("-n", "--namespace"),
    ("--context",),
    ("--kubeconfig",),
    ("--cluster",),
    ("--user",),
    ("-s", "--server"),
    ("--as",),
    ("--as-group",),
    ("--as-uid",),
)
"""kubectl's flags that take a value, known by name so that they may come anywhere
(`approve -n models mv/iris-1`); other flags pass through as written."""


def _dest(names: tuple[str, ...]) -> str:
    return names[-1].lstrip("-").replace("-", "_")


def parse(argv: list[str] | None) -> tuple[str, str, list[str]]:
    """(action, mv/NAME, the flags for kubectl)."""
    parser = argparse.ArgumentParser(
        prog="kubectl mlops",
        description=__doc__.split("\n\n")[0],
        epilog="kubectl's flags (-n, --context, --kubeconfig, --as ...) are passed to kubectl; "
        "others that take a value must be written --flag=value.",
    )
    parser.add_argument("action", choices=sorted(ACTIONS))
    parser.add_argument("model_version", metavar="mv/NAME")
    for names in KUBECTL_FLAGS:
        parser.add_argument(*names, action="append", default=[], dest=_dest(names))
    args, rest = parser.parse_known_args(argv)
    given = vars(args)
    flags = [f"{names[-1]}={value}" for names in KUBECTL_FLAGS for value in given[_dest(names)]]
    return args.action, args.model_version, flags + rest


def main(argv: list[str] | None = None) -> int:
    action, ref, flags = parse(argv)
    try:
        print(run(action, ref, flags))
    except PluginError as error:
        print(f"kubectl mlops {action}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
