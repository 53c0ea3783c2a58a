#!/usr/bin/env python3
"""The iris models and traffic that hack/demo.sh and hack/kind-e2e.sh use.

python hack/iris_models.py FOLDER   writes, in FOLDER:
  model-1.joblib, model-2.joblib   logistic regressions (model 2: another regularization)
  model-3.joblib                   a pipeline that lost a step and fails on the setosas
  reference.csv, reference-3.csv   the bundles' references (3's lacks the setosas)
  rows.txt, shifted.txt            callers' rows, one JSON list a line: iris in a
                                   shuffled order, and the same with longer petals
"""

import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer


def main(work: Path) -> None:
    frame, target = load_iris(return_X_y=True, as_frame=True)
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    rows = frame.to_numpy()
    joblib.dump(LogisticRegression(max_iter=500).fit(rows, target), work / "model-1.joblib")
    joblib.dump(LogisticRegression(C=0.5, max_iter=500).fit(rows, target), work / "model-2.joblib")
    # Trained on sqrt(|log x|); shipped without the abs step, it takes the root of a
    # negative number for every feature under 1 cm: the setosas' petal widths.
    steps = [FunctionTransformer(f) for f in (np.log, np.abs, np.sqrt)]
    faulty = make_pipeline(*steps, LogisticRegression(max_iter=500)).fit(rows, target)
    faulty.steps.pop(1)
    joblib.dump(faulty, work / "model-3.joblib")
    frame.to_csv(work / "reference.csv", index=False)
    # Version 3 was checked on a sample without setosas: its bundle's reference is that.
    frame[frame.petal_width >= 1].to_csv(work / "reference-3.csv", index=False)
    order = np.random.default_rng(7).permutation(len(rows))
    for name, shift in (("rows", 0.0), ("shifted", 2.0)):
        moved = rows[order] + np.array([0, 0, shift, shift / 2])
        lines = (f"[{', '.join(map(str, row))}]\n" for row in moved)
        (work / f"{name}.txt").write_text("".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
