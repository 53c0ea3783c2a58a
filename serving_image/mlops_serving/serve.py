"""`mlops-serve`: verify the artifact, then serve it with one uvicorn worker per CPU.

    mlops-serve          verify, then serve (settings from MLOPS_SERVING_* variables)
    mlops-serve verify   fetch and verify only; exit 1 with the reason on any failure
                         (and the verdict as JSON in MLOPS_SERVING_REPORT_FILE, if set)
    mlops-serve router   split a ModelDeployment's traffic between its tracks
                         (settings from MLOPS_ROUTER_* variables; see router.py)

The artifact is fetched and verified once, in this process, before any worker
starts: a digest mismatch, a missing file or an unknown format ends the process
with a non-zero status and never reaches a loader.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import uvicorn
from mlops_contract.digest import DigestMismatchError, file_digest
from mlops_contract.fetch import FetchError, local_path
from mlops_contract.settings import ServingSettings
from pydantic import ValidationError

from .app import create_app
from .bundle import BundleError, open_bundle
from .dataplane import fetch_artifact
from .loaders import container_cpus

log = logging.getLogger("mlops_serving")


def app_from_env() -> object:
    """uvicorn factory for worker processes: settings from the environment."""
    return create_app(ServingSettings())


VERDICT_MESSAGE_LIMIT = 2048  # a termination message holds at most 4096 bytes


def write_verdict(report: Path, settings: ServingSettings, error: str | None) -> None:
    """The verify step's verdict as one JSON object: ok, message, and for artifacts on
    a mounted path the digest and size found (of the file, or a bundle's bundle.json)."""
    uri = settings.model_uri
    verdict: dict[str, object] = {
        "ok": error is None,
        "message": (error or f"{uri} matches {settings.model_digest}")[:VERDICT_MESSAGE_LIMIT],
    }
    path = local_path(uri, settings.pvc_root)
    target = path / "bundle.json" if path is not None and path.is_dir() else path
    if target is not None and target.is_file():
        verdict["digest"] = file_digest(target)
        verdict["sizeBytes"] = target.stat().st_size
    report.write_text(json.dumps(verdict))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command", nargs="?", choices=["serve", "verify", "router"], default="serve"
    )
    args = parser.parse_args(argv)
    if args.command == "router":
        # Imported here only: the serving workers import this module too, and have no
        # use for the router's HTTP client.
        from .router import main as route  # noqa: PLC0415

        return route()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = ServingSettings()
    except ValidationError as error:
        print(f"mlops-serve: invalid settings:\n{error}", file=sys.stderr)
        return 2
    try:
        directory = fetch_artifact(settings)
        manifest, profile = open_bundle(directory)
    except (BundleError, DigestMismatchError, FetchError, OSError) as error:
        print(f"mlops-serve: artifact rejected: {error}", file=sys.stderr)
        if args.command == "verify" and settings.report_file:
            write_verdict(settings.report_file, settings, str(error))
        return 1
    log.info(
        "verified %s %s: %s/%s, %d features, %d reference rows",
        manifest.name,
        manifest.version,
        manifest.framework,
        manifest.format,
        len(manifest.features),
        profile.rows,
    )
    if args.command == "verify":
        if settings.report_file:
            write_verdict(settings.report_file, settings, None)
        return 0
    workers = settings.workers or container_cpus()
    if workers > 1:
        # The workers are new processes: they read both from their environment.
        shared = Path(tempfile.mkdtemp(prefix="mlops-serving-", dir=settings.cache_dir))
        for variable, folder in (
            ("PROMETHEUS_MULTIPROC_DIR", shared / "metrics"),
            ("MLOPS_SERVING_CAPTURE_DIR", shared / "capture"),
        ):
            folder.mkdir()
            os.environ.setdefault(variable, str(folder))
    uvicorn.run(
        "mlops_serving.serve:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        access_log=False,
        log_level=settings.log_level,
        loop="uvloop",
        http="httptools",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
