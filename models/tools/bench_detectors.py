#!/usr/bin/env python3
"""Full-size detector models for benchmarking lookout's ONNX detector (not run in CI).

  make OUTDIR     build random-weight YOLOv8n and YOLO11n from Ultralytics' own model yaml files
                  (`YOLO('yolov8n.yaml')`, `YOLO('yolo11n.yaml')`: architecture only, no weights are
                  downloaded) and export ONNX at imgsz 320 and 640 into OUTDIR (never into the repo):
                  OUTDIR/yolov8n-320.onnx, yolov8n-640.onnx, yolo11n-320.onnx, yolo11n-640.onnx
  ort MODEL       time MODEL with onnxruntime (CPU) at --threads intra-op threads: --warmup runs, then
                  the median and p95 over --repeat (alias --runs) runs of one random input; prints one
                  JSON line {"model", "threads", "median_ms", "p95_ms"}. Only session.run is timed, on
                  an input array made before the timed runs, with inter-op threads 1 and sequential
                  execution: what `lookout bench --detector` reports as tract's inference time, and
                  that command runs this (`--onnxruntime PYTHON`) to print both side by side.

The weights are random, so the outputs are meaningless; only the graph (and its cost) is real.

Run:   /work/venv/bin/python models/tools/bench_detectors.py make /tmp/bench-detectors
       /work/venv/bin/python models/tools/bench_detectors.py ort /tmp/bench-detectors/yolov8n-640.onnx --threads 2
Needs: ultralytics, torch, onnx, onnxruntime (+ onnxslim for the default simplified export).
No network: YOLO_OFFLINE=1 is set before ultralytics is imported, and the export runs with every
requirement already installed (it refuses to start otherwise, so ultralytics never tries to pip-install).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ["YOLO_OFFLINE"] = "1"  # ultralytics: no online checks, no analytics events
os.environ.setdefault("YOLO_VERBOSE", "False")

REPO = Path(__file__).resolve().parents[2]


def cmd_make(args: argparse.Namespace) -> None:
    out = Path(args.outdir).resolve()
    if out == REPO or REPO in out.parents:
        sys.exit(f"refusing to write into the repository ({out}); pick a directory outside {REPO}")
    missing = [m for m in ("ultralytics", "torch", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"missing Python packages: {missing}")
    simplify = importlib.util.find_spec("onnxslim") is not None
    if not simplify:
        print("onnxslim not installed: exporting with simplify=False", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from ultralytics import YOLO

    for arch in args.archs:
        for imgsz in args.imgsz:
            torch.manual_seed(0)  # random init of the yaml-built model: reproducible
            model = YOLO(f"{arch}.yaml")  # builds from the yaml shipped inside the package: no download
            # Export in a scratch directory (ultralytics writes next to the model "file", which for
            # a yaml model is the current directory), then move the result into OUTDIR.
            with tempfile.TemporaryDirectory() as tmp:
                cwd = os.getcwd()
                os.chdir(tmp)
                try:
                    f = model.export(format="onnx", imgsz=imgsz, opset=17, simplify=simplify, dynamic=False, batch=1)
                    f = Path(f).resolve()
                finally:
                    os.chdir(cwd)
                dst = out / f"{arch}-{imgsz}.onnx"
                shutil.move(str(f), dst)
            print(json.dumps({"file": str(dst), "bytes": dst.stat().st_size}))


def cmd_ort(args: argparse.Namespace) -> None:
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        sys.exit(f"{sys.executable} has no onnxruntime or numpy ({e}): pip install onnxruntime numpy")

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]  # symbolic dims (batch) -> 1
    if args.imgsz and len(shape) == 4:
        shape[2] = shape[3] = args.imgsz
    if args.input_size and len(shape) == 4:
        shape[3], shape[2] = args.input_size  # WIDTHxHEIGHT -> NCHW
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    feed = {inp.name: x}
    for _ in range(args.warmup):
        sess.run(None, feed)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    times = np.asarray(times)
    print(
        json.dumps(
            {
                "model": str(args.model),
                "threads": args.threads,
                "median_ms": round(float(np.median(times)), 3),
                "p95_ms": round(float(np.percentile(times, 95)), 3),
            }
        )
    )


def parse_size(s: str) -> tuple[int, int]:
    w, sep, h = s.lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{s!r}: expected WIDTHxHEIGHT, like 640x640")
    return int(w), int(h)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="export random-weight YOLOv8n / YOLO11n ONNX models into OUTDIR")
    m.add_argument("outdir")
    m.add_argument("--archs", nargs="+", default=["yolov8n", "yolo11n"])
    m.add_argument("--imgsz", nargs="+", type=int, default=[320, 640])
    m.set_defaults(func=cmd_make)
    o = sub.add_parser("ort", help="time one model with onnxruntime")
    o.add_argument("model")
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--warmup", type=int, default=5)
    o.add_argument("--runs", "--repeat", dest="runs", type=int, default=50)
    o.add_argument("--imgsz", type=int, default=0, help="square input size for models with dynamic H/W")
    o.add_argument(
        "--input-size",
        type=parse_size,
        default=None,
        help="WIDTHxHEIGHT input size for models with dynamic H/W (wins over --imgsz)",
    )
    o.set_defaults(func=cmd_ort)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
