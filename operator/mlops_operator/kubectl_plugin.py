"""`kubectl mlops`: approve, reject or revoke a ModelVersion as yourself; steer a
ModelDeployment's canary.

    kubectl mlops approve mv/iris-1 [-n NAMESPACE] [kubectl flags: --context, --as ...]
    kubectl mlops reject mv/iris-1
    kubectl mlops revoke mv/iris-1
    kubectl mlops promote|promote-full|abort|retry|pause|resume mdep/iris

Approving asks the API server who you are (`kubectl auth whoami`) and which bytes
the ModelVersion pins, and writes the three approval annotations in one request.
The API server's admission policy checks that you may approve, that the name is
yours and that the digest is the pinned one (mlops_operator/approval.py).
A rollout command is the annotation mlops.dev/rollout, with the time after it, so
that the same command given twice is acted on twice.
Installed as the console script `kubectl-mlops`, so kubectl finds it on PATH.
"""

import argparse
import datetime
import os
import subprocess
import sys
from typing import get_args

from mlops_operator.approval import ANNOTATION, APPROVED_BY, APPROVED_DIGEST, KEYS
from mlops_operator.constants import ANNOTATION_ROLLOUT
from mlops_operator.rollout import Command

KINDS = {"mv", "modelversion", "modelversions", "modelversions.mlops.dev"}
DEPLOYMENT_KINDS = {"mdep", "modeldeployment", "modeldeployments", "modeldeployments.mlops.dev"}
ACTIONS = {"approve": "approved", "reject": "rejected", "revoke": None}
COMMANDS: tuple[str, ...] = get_args(Command)


class PluginError(Exception):
    """What went wrong, in one line for the user."""


def object_name(ref: str, kinds: set[str] = KINDS) -> str:
    """`mv/NAME` (or any of the kind's names before the slash), or a bare NAME."""
    kind, slash, name = ref.rpartition("/")
    if (slash and kind.lower() not in kinds) or not name:
        what, short = ("a ModelVersion", "mv") if kinds is KINDS else ("a ModelDeployment", "mdep")
        raise PluginError(f"{ref!r} is not {what}: write {short}/NAME")
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


def steer(command: str, ref: str, flags: list[str], now: datetime.datetime) -> str:
    """A rollout command to a ModelDeployment; the line to print."""
    name = object_name(ref, DEPLOYMENT_KINDS)
    value = f"{command} {now.isoformat(timespec='milliseconds')}"
    _kubectl("annotate", "--overwrite", "modeldeployments.mlops.dev", name,
             f"{ANNOTATION_ROLLOUT}={value}", *flags)  # fmt: skip
    return f"modeldeployment {name}: {command} requested"


def run(action: str, ref: str, flags: list[str]) -> str:
    """Do it; the line to print."""
    if action in COMMANDS:
        return steer(action, ref, flags, datetime.datetime.now(datetime.UTC))
    name = object_name(ref)
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
    parser.add_argument("action", choices=[*sorted(ACTIONS), *COMMANDS])
    parser.add_argument("object", metavar="mv/NAME|mdep/NAME")
    for names in KUBECTL_FLAGS:
        parser.add_argument(*names, action="append", default=[], dest=_dest(names))
    args, rest = parser.parse_known_args(argv)
    given = vars(args)
    flags = [f"{names[-1]}={value}" for names in KUBECTL_FLAGS for value in given[_dest(names)]]
    return args.action, args.object, flags + rest


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
