"""Export the released PSMNet for a real KITTI 2015 pair and compare ONNX Runtime with `exact`.

    PYTHONPATH=$PWD .venv/bin/python scripts/onnx_parity.py [--threads 2] [--out out/onnx_parity]

The pair is assets/samples/kitti2015 (1242x375, padded to 1248x384 by the node's rule). Steps,
each timed: stereo_depth_export (file size), ONNX Runtime CPU through backend onnx, the exact
engine through backend psmnet; each inference runs in its own process so its peak memory
(/proc VmHWM) is its own. Prints one JSON object: seconds, GB, MB and |ORT - exact|
mean/max/p99 in px.
Heavy (minutes on 2 cores, about 2 GB per process): run it alone, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "assets" / "samples" / "kitti2015"
WEIGHTS = REPO_ROOT / "assets" / "weights" / "pretrained_model_KITTI2015.tar"

_INFER = """
import sys, time, numpy as np, cv2
left, right = (cv2.imread(sys.argv[2] + f"/kitti_000046_{s}.png")[..., ::-1].copy()
               for s in ("left", "right"))
from stereo_depth_ros.backends import make_backend
started = time.perf_counter()
if sys.argv[1] == "onnx":
    backend = make_backend("onnx", onnx_path=sys.argv[3], providers="cpu")
else:
    backend = make_backend("psmnet", weights_path=sys.argv[3], device="cpu", engine="exact")
loaded = time.perf_counter()
result = backend.compute(left, right)
done = time.perf_counter()
np.save(sys.argv[4], result.disparity)
# VmHWM: this process's peak resident memory (ru_maxrss would carry the parent's across exec)
peak_kb = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(f"{loaded - started:.2f} {done - loaded:.2f} {peak_kb}")
"""


def _infer(kind: str, model: Path, output: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", _INFER, kind, str(SAMPLES), str(model),
                             str(output)], env=env, capture_output=True, text=True, check=True)
    load_s, infer_s, peak_kb = (float(v) for v in result.stdout.split()[-3:])
    return {"load_s": load_s, "infer_s": infer_s, "max_rss_gb": round(peak_kb / 1e6, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "onnx_parity")
    args = parser.parse_args()
    import numpy as np

    from stereo_depth_ros.tools.export import main as export

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "psmnet_kitti2015_384x1248.onnx"
    started = time.perf_counter()
    code = export(["--weights", str(WEIGHTS), "--size", "375x1242", "--output", str(onnx_path)])
    export_s = time.perf_counter() - started
    if code:
        return code
    report = {"export_s": round(export_s, 1),
              "file_mb": round(onnx_path.stat().st_size / 1e6, 1),
              "onnx_cpu": _infer("onnx", onnx_path, args.out / "onnx.npy", args.threads),
              "exact": _infer("exact", WEIGHTS, args.out / "exact.npy", args.threads)}
    got, exact = np.load(args.out / "onnx.npy"), np.load(args.out / "exact.npy")
    diff = np.abs(got - exact)
    report.update(shape=list(got.shape), mean_abs_px=float(diff.mean()),
                  max_abs_px=float(diff.max()), p99_abs_px=float(np.percentile(diff, 99)))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
