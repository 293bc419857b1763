"""Time every corruption at every severity on a 768x576 frame (the vtest camera's size).

    python benchmarks/bench_corruptions.py [--image PATH] [--repeat 3]

Prints milliseconds per call (median of ``--repeat``). The target is <= ~100 ms per call on
one desktop core; docs/field-guide.md lists the measured exceptions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from agent.corruptions import CORRUPTIONS, SEVERITIES
from agent.datafiles import shared_test_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=shared_test_data() / "images" / "photos" / "opencv_leuvenA.jpg")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    loaded = cv2.imread(str(args.image))
    if loaded is None:  # no test data: a synthetic frame still times the code
        loaded = np.random.default_rng(0).integers(0, 256, size=(576, 768, 3), dtype=np.uint8)
    image = np.asarray(cv2.resize(loaded, (768, 576), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    print(f"{'corruption':18s} " + " ".join(f"{'s' + str(s):>7s}" for s in SEVERITIES) + "   (ms per call, 768x576)")
    for name, corruption in CORRUPTIONS.items():
        cells = []
        for s in SEVERITIES:
            times = []
            for r in range(args.repeat):
                t0 = time.perf_counter()
                corruption(image, s, r)
                times.append((time.perf_counter() - t0) * 1e3)
            cells.append(f"{float(np.median(times)):7.1f}")
        print(f"{name:18s} " + " ".join(cells))


if __name__ == "__main__":
    main()
