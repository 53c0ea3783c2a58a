#!/usr/bin/env python3
"""Write crds/*.yaml, the chart's copy and crds/README.md from mlops_operator.api.

python hack/gen_crds.py          write the files
python hack/gen_crds.py --check  exit 1 if any committed file differs
"""

import sys
from pathlib import Path

from mlops_operator.api.crd import render_files

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for relative, text in render_files().items():
        path = ROOT / relative
        if path.exists() and path.read_text() == text:
            continue
        stale.append(relative)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for relative in stale:
        print(f"{'stale' if check else 'wrote'}: {relative}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
