"""`mlops-drift REFERENCE CURRENT`: the drift report of two CSV or Parquet files."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, get_args

from .engine import (
    Correction,
    DriftConfigError,
    DriftReport,
    FeatureTest,
    Method,
    Tests,
    detect_drift,
)


def read_table(path: Path) -> Any:
    import pandas as pd  # noqa: PLC0415 - only the command line reads files

    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlops-drift", description="Data drift of CURRENT against REFERENCE, per column."
    )
    parser.add_argument("reference", type=Path, help="CSV or Parquet file of reference rows")
    parser.add_argument("current", type=Path, help="CSV or Parquet file of current rows")
    parser.add_argument("--method", choices=get_args(Method), default="auto")
    parser.add_argument("--threshold", type=float, help="default: the method's own")
    parser.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME=METHOD[:THRESHOLD]",
        help="a column's own test (repeatable)",
    )
    parser.add_argument("--correction", choices=get_args(Correction), default="none")
    parser.add_argument("--drift-share", type=float, default=0.5)
    parser.add_argument("--min-samples", type=int, default=1)
    parser.add_argument("--prediction", help="the column of model outputs, judged on its own")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def feature_tests(specs: list[str]) -> dict[str, FeatureTest]:
    tests = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        method, _, threshold = rest.partition(":")
        if not name or method not in get_args(Method):
            raise DriftConfigError(f"--feature {spec!r}: expected NAME=METHOD[:THRESHOLD]")
        tests[name] = FeatureTest(method, float(threshold) if threshold else None)  # type: ignore[arg-type]
    return tests


def render(report: DriftReport) -> str:
    if report.insufficient_data:
        return f"insufficient data: {report.samples} rows; nothing judged"
    rows = [*report.features, *([report.prediction] if report.prediction else [])]
    width = max([len("feature"), *(len(r.name) for r in rows)])
    lines = [
        f"{'feature':<{width}}  {'method':<13}  {'statistic':>10}  {'p-value':>9}  "
        f"{'threshold':>9}  drifted"
    ]
    for r in rows:
        p_value = "" if r.p_value is None else f"{r.p_value:.3g}"
        lines.append(
            f"{r.name:<{width}}  {r.method:<13}  {r.statistic:>10.4g}  {p_value:>9}  "
            f"{r.threshold:>9.3g}  {'yes' if r.drifted else 'no'}"
        )
    verdict = "DRIFT" if report.dataset_drift else "no drift"
    lines.append(
        f"{verdict}: {report.drifted} of {len(report.features)} features drifted "
        f"(share {report.drift_share:.2f}, threshold {report.threshold_share:.2f}); "
        f"{report.samples} rows against {report.reference_samples}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 without dataset drift, 1 with it, 2 on bad input."""
    args = parse_args(argv)
    try:
        report = detect_drift(
            read_table(args.reference),
            read_table(args.current),
            tests=Tests(args.method, args.threshold, feature_tests(args.feature)),
            correction=args.correction,
            drift_share=args.drift_share,
            min_samples=args.min_samples,
            prediction=args.prediction,
        )
    except (DriftConfigError, OSError, ValueError) as error:
        print(f"mlops-drift: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return 1 if report.dataset_drift else 0
