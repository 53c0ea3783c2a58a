"""`mlops-operator`: run the operator against the current kube context or in-cluster.

    mlops-operator [--namespace NS ...] [--verbose]

Without --namespace it watches the whole cluster (MLOPS_NAMESPACES also works).
"""

import argparse
import asyncio
import logging
import os
import socket
import sys

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from mlops_operator.settings import OperatorSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops-operator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", "-n", action="append", default=[], help="namespace to watch")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=["json", "plain"], default="json")
    args = parser.parse_args(argv)
    try:
        settings = OperatorSettings()
    except ValidationError as error:
        print(f"mlops-operator: invalid settings:\n{error}", file=sys.stderr)
        return 2
    if refused := _listen(settings):
        # At once and in one line: kopf would retry a failing startup every minute, while
        # no handler ran and nothing told the user.
        print(f"mlops-operator: {refused}", file=sys.stderr)
        return 1
    from mlops_operator import main  # noqa: F401, PLC0415 - registers the handlers

    namespaces = args.namespace or settings.namespaces
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    port = settings.liveness_port
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{port}/healthz" if port else None,
        )
    )
    return 0


def _listen(settings: OperatorSettings) -> str | None:
    """Start the metrics server, and check that the liveness port is free; why not,
    if one cannot be had."""
    if port := settings.liveness_port:
        try:
            socket.create_server(("0.0.0.0", port)).close()  # noqa: S104 - kopf's address
        except OSError as error:
            return f"cannot listen on the liveness port 0.0.0.0:{port}: {_reason(error)}"
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port)
        except OSError as error:
            return f"cannot listen on the metrics port {settings.metrics_port}: {_reason(error)}"
    return None


def _reason(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)


if __name__ == "__main__":
    sys.exit(main())
