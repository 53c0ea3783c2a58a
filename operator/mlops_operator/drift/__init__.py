"""The drift engine: exact, fast two-sample tests and distances, per feature and per
dataset. Pure numpy and scipy; it imports no Kubernetes client and no kopf.

    from mlops_operator.drift import detect_drift
    report = detect_drift(reference_df, current_df, correction="fdr")
    report.dataset_drift, [f.name for f in report.features if f.drifted]
"""

from .engine import (
    DEFAULT_THRESHOLDS,
    DriftConfigError,
    DriftReport,
    FeatureDrift,
    FeatureTest,
    Reference,
    Tests,
    choose,
    detect_capture_drift,
    detect_drift,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DriftConfigError",
    "DriftReport",
    "FeatureDrift",
    "FeatureTest",
    "Reference",
    "Tests",
    "choose",
    "detect_capture_drift",
    "detect_drift",
]
