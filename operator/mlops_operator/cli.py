"""`mlops-operator`: run the operator against the current kube context or in-cluster.

    mlops-operator [--namespace NS ...] [--verbose]

Without --namespace it watches the whole cluster (MLOPS_NAMESPACES also works).
"""

import argparse
import asyncio
import logging
import sys

import kopf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops-operator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", "-n", action="append", default=[], help="namespace to watch")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=["json", "plain"], default="json")
    args = parser.parse_args(argv)
    from mlops_operator import main as handlers  # noqa: PLC0415 - registers the handlers

    namespaces = args.namespace or handlers.SETTINGS.namespaces
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    port = handlers.SETTINGS.liveness_port
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{port}/healthz" if port else None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
