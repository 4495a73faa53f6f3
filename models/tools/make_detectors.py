#!/usr/bin/env python3
"""Tiny ONNX object detectors + golden outputs for lookout's detector (pipeline/src/detect).

Every model is a tiny *random-weight* PyTorch module (seeded) whose output has exactly the layout a real
exporter produces, exported with torch.onnx.export (TorchScript exporter, opset 17). Boxes are decoded
YOLO-style inside the graph (grid + offsets * stride), so they are plausible; the class / objectness
biases are tuned (deterministically, by a search below) so each model yields a useful number of
detections on the test images, NMS really suppresses overlapping same-class boxes, and no score or IoU
sits close enough to a threshold that f32 noise between runtimes could flip a decision.

Output: models/fixtures/detectors/
  yolov8.onnx           Ultralytics YOLOv8/YOLO11 layout: images [1,3,64,96] -> output0 [1,4+3,120]
  yolov8-dynamic.onnx   same, dynamic batch/H/W ("batch"/"height"/"width", as Ultralytics' dynamic=True),
                        80 classes, no `names` metadata, intermediate shapes in value_info (as onnxslim
                        leaves them, naming the symbolic batch)
  yolov5.onnx           YOLOv5/YOLOX layout: images [1,3,64,64] -> output0 [1,240,5+4] (objectness)
  end2end.onnx          NMS-free top-k inside the graph: images [1,3,64,64] -> output0 [1,50,6]
  detr.onnx             DETR / RF-DETR naming: input [1,3,64,64] -> dets [1,20,4], labels [1,20,5]
  detr.labels.txt       its 5 class names
  bad-layout.onnx       valid model, output [1,7]            (unsupported layout)
  wrong-rank.onnx       valid model, input rank 3 [1,64,64]  (not NCHW)
  ball.onnx             hand-built graph (onnx.helper, no weights) finding videotestsrc's white ball
  ball_320x240.png      one real `videotestsrc pattern=ball` frame (when GStreamer was available)
  <model>.<image>.input.bin / .<output>.bin   raw little-endian f32 tensors
  goldens.json          everything the Rust tests compare against (see README.md)

Goldens come from onnxruntime (CPU) running the exported files; post-processing is the reference code:
ultralytics' LetterBox / non_max_suppression / scale_boxes for the YOLO layouts (the installed package
is imported and called), YOLOv5's NMS re-implemented below, plain rules for end2end and DETR.

Run:   /work/venv/bin/python models/tools/make_detectors.py
Needs: torch, torchvision, onnx, onnxruntime, opencv-python-headless, numpy, ultralytics. No network
(YOLO_OFFLINE=1 is set before ultralytics is imported). Optional: gst-launch-1.0 for the ball check.
The output is deterministic: re-running rewrites identical files.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["YOLO_OFFLINE"] = "1"  # ultralytics: no online checks, no analytics
os.environ.setdefault("YOLO_VERBOSE", "False")

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision  # imported so ultralytics' NMS takes its torchvision.ops.nms path (as in its predictor)
import ultralytics
from onnx import TensorProto, helper
from ultralytics.data.augment import LetterBox
from ultralytics.utils import YAML
from ultralytics.utils import ROOT as ULTRA_ROOT
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import scale_boxes

MODELS = Path(__file__).resolve().parents[1]
OUT = MODELS / "fixtures" / "detectors"
IMAGES = MODELS / "fixtures" / "images"
IMAGE_FILES = ["photo_640x480.jpg", "tall_120x900.png", "wide_1000x100.png"]

CONF, IOU, MAX_DET = 0.25, 0.45, 300
OPSET = 17
PAD = 114.0 / 255.0  # LetterBox padding value after /255
# Decisions must not sit this close to a threshold (f32 noise between onnxruntime / tract / Rust NMS).
SCORE_MARGIN, IOU_MARGIN = 2e-3, 2e-3
SCORE_GAP = 1e-5  # min distance between two candidate scores (no ties: order must not be implementation-defined)
COUNT_RANGE = (5, 40)  # wanted detections per image (after NMS)
BALL_PNG = "ball_320x240.png"
FIXED_DATE = "2025-01-01T00:00:00+00:00"  # metadata `date` (fixed: the output must be deterministic)

COCO80 = [YAML.load(ULTRA_ROOT / "cfg/datasets/coco.yaml")["names"][i] for i in range(80)]
NAMES3 = {0: "person", 1: "car", 2: "dog"}
NAMES5 = {0: "person", 1: "bicycle", 2: "car", 3: "cat"}  # yolov5 (4 classes)
DETR_LABELS = ["person", "bicycle", "car", "dog", "cat"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------------
# random init


def reinit(module: nn.Module, seed: int, gain: float = 1.6) -> None:
    """Seeded N(0, gain^2 / fan_in) weights, N(0, .1) biases for every conv / linear."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=g) * (gain / math.sqrt(fan_in))
            if m.bias is not None:
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1


# ----------------------------------------------------------------------------------------------------
# modules


class Backbone(nn.Module):
    """Stride-2 3x3 convs + SiLU, no biases, on (x - 114/255): letterbox padding gives exactly 0
    features, so padded anchors score exactly the head bias (no detections in the grey bars)."""

    def __init__(self, widths=(8, 12, 16, 24), out_levels=(2, 3)):
        super().__init__()
        chans = (3,) + tuple(widths)
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, 2, 1, bias=False) for i in range(len(widths)))
        self.out_levels = out_levels

    def forward(self, x):
        x = x - PAD
        feats = []
        for i, conv in enumerate(self.convs):
            x = F.silu(conv(x))
            if i in self.out_levels:
                feats.append(x)
        return feats


def grid_points(f: torch.Tensor, offset: float):
    """Cell coordinates of a [b,c,h,w] map, row-major: x [h*w], y [h*w] (traced from the shape, so
    they follow a dynamic input size)."""
    h, w = f.shape[2], f.shape[3]
    sx = torch.arange(w, dtype=torch.float32) + offset
    sy = torch.arange(h, dtype=torch.float32) + offset
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    return xx.reshape(-1), yy.reshape(-1)


class V8Head(nn.Module):
    """Anchor-free decoupled head like Ultralytics' Detect: DFL box distances (ltrb, softmax over
    reg_max bins, expectation), anchors at cell centres, xywh = dist2bbox * stride; sigmoid scores."""

    def __init__(self, chs, nc, strides=(8, 16), reg_max=8):
        super().__init__()
        self.nc, self.reg_max, self.strides = nc, reg_max, strides
        self.box = nn.ModuleList(nn.Conv2d(c, 4 * reg_max, 1) for c in chs)
        self.cls = nn.ModuleList(nn.Conv2d(c, nc, 1) for c in chs)
        self.register_buffer("proj", torch.arange(reg_max, dtype=torch.float32).view(1, 1, reg_max, 1))

    def decode(self, feats):
        """-> boxes xyxy [b, A, 4] (input pixels), class logits [b, nc, A]."""
        dists, logits, ax, ay, st = [], [], [], [], []
        for i, f in enumerate(feats):
            b = f.shape[0]
            d = self.box[i](f).view(b, 4, self.reg_max, -1).softmax(2)
            dists.append((d * self.proj).sum(2))  # [b, 4, hw] in grid units
            logits.append(self.cls[i](f).view(b, self.nc, -1))
            x, y = grid_points(f, 0.5)
            ax.append(x)
            ay.append(y)
            st.append(torch.full_like(x, float(self.strides[i])))
        dist = torch.cat(dists, 2)
        ax, ay, st = torch.cat(ax), torch.cat(ay), torch.cat(st)
        x1 = (ax - dist[:, 0]) * st
        y1 = (ay - dist[:, 1]) * st
        x2 = (ax + dist[:, 2]) * st
        y2 = (ay + dist[:, 3]) * st
        return torch.stack((x1, y1, x2, y2), -1), torch.cat(logits, 2)


class YoloV8(nn.Module):
    """output0 [b, 4 + nc, A]: cx, cy, w, h (input pixels), sigmoid class scores."""

    def __init__(self, nc, strides=(8, 16)):
        super().__init__()
        self.backbone = Backbone()
        self.head = V8Head((16, 24), nc, strides)

    def forward(self, images):
        xyxy, logits = self.head.decode(self.backbone(images))
        x1, y1, x2, y2 = xyxy.unbind(-1)
        box = torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), 1)  # [b, 4, A]
        return torch.cat((box, logits.sigmoid()), 1)


class End2End(nn.Module):
    """NMS-free export: best class per anchor, TopK(k) over anchors, Gather -> [b, k, 6] =
    x1, y1, x2, y2, score, class (float). (Ultralytics' end2end `agnostic` top-k branch.)

    A fixed per-anchor logit prior (0..0.2, scrambled anchor order) breaks the exact ties of the
    letterbox-padding anchors (all-zero features): tied scores would leave the TopK row order to
    each runtime's tie rule."""

    def __init__(self, nc, k=50, anchors=80):
        super().__init__()
        self.k = k
        self.backbone = Backbone()
        self.head = V8Head((16, 24), nc)
        perm = (torch.arange(anchors) * 37) % anchors  # 37 coprime with 80: a permutation
        self.register_buffer("prior", 0.2 * perm.float().view(1, 1, anchors) / anchors)

    def forward(self, images):
        xyxy, logits = self.head.decode(self.backbone(images))
        scores = (logits + self.prior).sigmoid().transpose(1, 2)  # [b, A, nc]
        best, cls = scores.max(-1)  # [b, A]
        top, idx = best.topk(self.k, dim=1)  # sorted, highest first
        boxes = xyxy.gather(1, idx.unsqueeze(-1).expand(-1, -1, 4))
        cls = cls.gather(1, idx).float()
        return torch.cat((boxes, top.unsqueeze(-1), cls.unsqueeze(-1)), -1)


class YoloV5(nn.Module):
    """YOLOv5 Detect layout: 3 anchors per cell, per level view(b, na, no, h, w).permute(0,1,3,4,2),
    sigmoid everything, xy = (2 s - 0.5 + cell) * stride, wh = (2 s)^2 * anchor; output0 [b, A, 5 + nc]
    = cx, cy, w, h (input pixels), objectness, class scores. Anchor order: level, anchor, row, col."""

    ANCHORS = (((16, 20), (26, 18), (20, 30)), ((36, 42), (50, 32), (40, 56)))  # pixels, per level

    def __init__(self, nc, strides=(8, 16)):
        super().__init__()
        self.nc, self.no, self.na, self.strides = nc, 5 + nc, 3, strides
        self.backbone = Backbone()
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in (16, 24))
        self.register_buffer("anchor_px", torch.tensor(self.ANCHORS, dtype=torch.float32))

    def forward(self, images):
        outs = []
        for i, f in enumerate(self.backbone(images)):
            b, _, h, w = f.shape
            y = self.m[i](f).view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).sigmoid()
            gx, gy = grid_points(f, -0.5)
            grid = torch.stack((gx, gy), -1).view(1, 1, h, w, 2)
            xy = (y[..., 0:2] * 2 + grid) * self.strides[i]
            wh = (y[..., 2:4] * 2) ** 2 * self.anchor_px[i].view(1, self.na, 1, 1, 2)
            outs.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, self.no))
        return torch.cat(outs, 1)


class TinyDETR(nn.Module):
    """Conv backbone -> 8x8 tokens + positional embedding; 20 learned queries cross-attend once, MLP,
    LayerNorm;
    boxes = sigmoid(delta + logit(reference point)) (normalised cxcywh), labels = raw class logits."""

    def __init__(self, nq=20, nc=5, d=16):
        super().__init__()
        self.d = d
        self.backbone = Backbone(widths=(8, 12, d), out_levels=(2,))
        self.pos = nn.Parameter(torch.zeros(1, 64, d))
        self.query = nn.Parameter(torch.zeros(1, nq, d))
        self.ref = nn.Parameter(torch.zeros(1, nq, 4))  # inverse-sigmoid reference boxes
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.q = nn.Linear(d, d)
        self.mlp1 = nn.Linear(d, 2 * d)
        self.mlp2 = nn.Linear(2 * d, d)
        self.norm = nn.LayerNorm(d)
        self.box = nn.Linear(d, 4)
        self.cls = nn.Linear(d, nc)

    def forward(self, x):
        f = self.backbone(x)[0]  # [1, d, 8, 8]
        t = f.flatten(2).transpose(1, 2) + self.pos  # [1, 64, d]
        a = torch.softmax(self.q(self.query) @ self.k(t).transpose(1, 2) / math.sqrt(self.d), -1)
        h = self.query + a @ self.v(t)
        h = self.norm(h + self.mlp2(F.silu(self.mlp1(h))))
        return torch.sigmoid(self.box(h) + self.ref), self.cls(h)


class BadLayout(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 7)

    def forward(self, images):
        return self.fc(images.mean((2, 3)))  # [1, 7]


class WrongRank(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 7)

    def forward(self, images):  # [1, 64, 64]
        return self.fc(images).transpose(1, 2)  # [1, 7, 64]


# ----------------------------------------------------------------------------------------------------
# preprocessing (reference)


def load_rgb(name: str) -> np.ndarray:
    bgr = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def letterbox(rgb: np.ndarray, h: int, w: int):
    """Ultralytics' predictor path: LetterBox(auto=False, scaleup, center) on HWC u8, then
    HWC->CHW, float, /255 (as BasePredictor.preprocess)."""
    lb = LetterBox(new_shape=(h, w), auto=False, scaleup=True, center=True)
    p = lb.get_params({"img": rgb})
    img = lb(image=rgb)
    assert img.shape == (h, w, 3), img.shape
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0).contiguous().float().div_(255)
    geo = {
        "ratio": p["ratio"][0],
        "new_unpad_w": p["new_unpad"][0],
        "new_unpad_h": p["new_unpad"][1],
        "pad_left": p["left"],
        "pad_top": p["top"],
        "pad_right": p["right"],
        "pad_bottom": p["bottom"],
    }
    return x.numpy(), geo


def detr_preprocess(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    x = img.astype(np.float32) / np.float32(255)
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


# ----------------------------------------------------------------------------------------------------
# post-processing (reference)


def xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[:, 0] = x[:, 0] - x[:, 2] / 2
    y[:, 1] = x[:, 1] - x[:, 3] / 2
    y[:, 2] = x[:, 0] + x[:, 2] / 2
    y[:, 3] = x[:, 1] + x[:, 3] / 2
    return y


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def margins(scores_all: torch.Tensor, cand_boxes: torch.Tensor, cand_cls: torch.Tensor, cand_scores, thr: float) -> dict:
    """How far the decisions are from flipping: min |score - thr| over every score; the smallest gap
    between two candidate scores (ties make the NMS / output order implementation-defined); and,
    replaying greedy class-aware NMS in float64, min |max IoU with the already-kept boxes - IOU|
    over every suppression decision taken (the only IoUs that decide anything)."""
    m = {"min_score_margin": float((scores_all - thr).abs().min()) if scores_all.numel() else 1.0}
    sc = np.asarray(cand_scores, np.float64).reshape(-1)
    m["min_score_gap"] = float(np.diff(np.sort(sc)).min()) if sc.size > 1 else 1.0
    iou_m, kept = 1.0, []
    if sc.size:
        iou = box_iou(cand_boxes.double(), cand_boxes.double()).numpy()
        cl = np.asarray(cand_cls).reshape(-1)
        for i in np.argsort(-sc, kind="stable"):
            same = [k for k in kept if cl[k] == cl[i]]
            if same:
                worst = float(iou[i, same].max())
                iou_m = min(iou_m, abs(worst - IOU))
                if worst > IOU:
                    continue
            kept.append(i)
    m["min_iou_margin"] = iou_m
    m["replay_kept"] = len(kept)
    return m


def check_replay(stats: dict) -> None:
    replay = stats.pop("replay_kept")
    robust = stats["min_iou_margin"] > IOU_MARGIN and stats["min_score_gap"] > SCORE_GAP
    assert replay == stats["kept"] or not robust, stats


def post_yolov8(out: np.ndarray, in_hw, orig_hw):
    pred = torch.from_numpy(out.copy())  # [1, 4+nc, A]
    det = non_max_suppression(pred, conf_thres=CONF, iou_thres=IOU, max_det=MAX_DET)[0]
    boxes = scale_boxes(in_hw, det[:, :4].clone(), orig_hw)
    # diagnostics
    p = pred[0].T
    best, cls = p[:, 4:].max(1)
    cand = best > CONF
    stats = {"candidates": int(cand.sum()), "kept": int(det.shape[0])}
    stats.update(margins(best, xywh2xyxy(p[cand, :4]), cls[cand], best[cand], CONF))
    check_replay(stats)
    return boxes, det[:, 4], det[:, 5].long(), stats


def nms_yolov5(pred: torch.Tensor, conf_thres=CONF, iou_thres=IOU, max_det=MAX_DET, max_nms=30000, max_wh=7680):
    """YOLOv5 utils/general.py non_max_suppression (single label, class-aware), one image [A, 5+nc]."""
    x = pred[pred[:, 4] > conf_thres].clone()  # objectness candidates
    if not x.shape[0]:
        return torch.zeros((0, 6))
    x[:, 5:] *= x[:, 4:5]  # conf = obj_conf * cls_conf
    box = xywh2xyxy(x[:, :4])
    conf, j = x[:, 5:].max(1, keepdim=True)
    x = torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]
    if not x.shape[0]:
        return torch.zeros((0, 6))
    x = x[x[:, 4].argsort(descending=True)[:max_nms]]
    c = x[:, 5:6] * max_wh
    i = torchvision.ops.nms(x[:, :4] + c, x[:, 4], iou_thres)[:max_det]
    return x[i]


def post_yolov5(out: np.ndarray, in_hw, orig_hw):
    pred = torch.from_numpy(out.copy())[0]  # [A, 5+nc]
    det = nms_yolov5(pred)
    boxes = scale_boxes(in_hw, det[:, :4].clone(), orig_hw)
    obj = pred[:, 4]
    conf, cls = (pred[:, 5:] * obj[:, None]).max(1)
    cand = (obj > CONF) & (conf > CONF)
    stats = {"objectness_candidates": int((obj > CONF).sum()), "candidates": int(cand.sum()), "kept": int(det.shape[0])}
    stats.update(margins(torch.cat((obj, conf[obj > CONF])), xywh2xyxy(pred[cand, :4]), cls[cand], conf[cand], CONF))
    check_replay(stats)
    return boxes, det[:, 4], det[:, 5].long(), stats


def post_end2end(out: np.ndarray, in_hw, orig_hw):
    pred = torch.from_numpy(out.copy())  # [1, k, 6]
    det = non_max_suppression(pred, conf_thres=CONF, iou_thres=IOU, max_det=MAX_DET)[0]  # end-to-end branch
    boxes = scale_boxes(in_hw, det[:, :4].clone(), orig_hw)
    sc = np.sort(pred[0, :, 4].double().numpy())
    stats = {"kept": int(det.shape[0]), "min_score_margin": float((pred[0, :, 4] - CONF).abs().min()),
             "min_score_gap": float(np.diff(sc).min())}  # fmt: skip
    return boxes, det[:, 4], det[:, 5].long(), stats


def post_detr(dets: np.ndarray, labels: np.ndarray, orig_hw):
    boxes = torch.from_numpy(dets.copy())[0]  # [q, 4] cxcywh normalised
    logits = torch.from_numpy(labels.copy())[0]  # [q, nc]
    mx, cls = logits.max(1)
    score = torch.sigmoid(mx)
    keep = score > CONF
    h0, w0 = orig_hw
    xyxy = xywh2xyxy(boxes) * torch.tensor([w0, h0, w0, h0], dtype=torch.float32)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clamp(0, w0)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clamp(0, h0)
    idx = [int(i) for i in torch.nonzero(keep).view(-1)]
    idx.sort(key=lambda i: -float(score[i]))  # stable
    idx = idx[:MAX_DET]
    sc = np.sort(score.double().numpy())
    stats = {"kept": len(idx), "min_score_margin": float((score - CONF).abs().min()), "min_score_gap": float(np.diff(sc).min())}
    return xyxy[idx], score[idx], cls[idx], stats


# ----------------------------------------------------------------------------------------------------
# export helpers


def ultralytics_metadata(name: str, names: dict | None, imgsz, stride: int, dynamic=False, end2end=False) -> dict:
    """Keys, order and value formats of Ultralytics' exporter (engine/exporter.py: str() of each value)."""
    md = {
        "description": f"Ultralytics {name} model (lookout test fixture: tiny, random weights, not trained)",
        "author": "lookout models/tools/make_detectors.py",
        "date": FIXED_DATE,
        "version": ultralytics.__version__,
        "license": "test fixture",
        "docs": "https://docs.ultralytics.com",
        "stride": stride,
        "task": "detect",
        "head": "Detect",
        "batch": 1,
        "imgsz": list(imgsz),
        "names": names,
        "args": {
            "data": None,
            "batch": 1,
            "fraction": 1.0,
            "quantize": None,
            "nms": False if end2end else None,
            "dynamic": dynamic,
            "simplify": False,
            "opset": OPSET,
        },
        "channels": 3,
        "end2end": end2end,
    }
    if names is None:
        del md["names"]
    return {k: str(v) for k, v in md.items()}


def export(model: nn.Module, example, path: Path, input_names, output_names, dynamic_axes=None, metadata=None, out_dims=None, value_info=False):
    model.eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            dynamo=False,
        )
    m = onnx.load(str(path))
    m.producer_name, m.producer_version = "pytorch", torch.__version__
    for o in m.graph.output:  # the exporter leaves some output dims of dynamic graphs unnamed/unknown
        for d, v in zip(o.type.tensor_type.shape.dim, (out_dims or {}).get(o.name, [])):
            if isinstance(v, int):
                d.dim_value = v
            else:
                d.dim_param = v
    for k, v in (metadata or {}).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    if value_info:  # shapes of every intermediate value, symbolic dims by name
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        assert any(d.dim_param == "batch" for v in m.graph.value_info for d in v.type.tensor_type.shape.dim)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    assert path.stat().st_size < 1_000_000, (path, path.stat().st_size)


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # plain f32 op semantics
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def io_desc(sess: ort.InferenceSession) -> dict:
    f = lambda v: {"name": v.name, "shape": [d if isinstance(d, int) else str(d) for d in v.shape], "dtype": v.type}
    return {"inputs": [f(v) for v in sess.get_inputs()], "outputs": [f(v) for v in sess.get_outputs()]}


def save_f32(name: str, a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, dtype="<f4")
    a.tofile(OUT / name)
    return {"file": name, "shape": list(a.shape)}


def f32(v) -> float:
    return float(np.float32(v))


# ----------------------------------------------------------------------------------------------------
# bias tuning: pick one scalar shift so every test image gets COUNT_RANGE detections, NMS suppresses
# something (NMS layouts), and all score / IoU margins are safe. Deterministic grid search.


def correlate_classes(convs, seed: int, own: float = 0.35, bias_std: float | None = 1.0, groups=None) -> None:
    """Make the class logits (rows of each 1x1 conv; `groups` = list of row lists, default all rows)
    share one image-driven component plus a little of their own, and give the classes different
    biases, so neighbouring anchors on the same "object" agree on the class (as in a trained model)
    and class-aware NMS has same-class overlaps to suppress."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for conv in convs:
            for rows in groups or [list(range(conv.weight.shape[0]))]:
                w = conv.weight[rows]
                conv.weight[rows] = w[:1] + own * w
                if bias_std is not None:
                    conv.bias[rows] = torch.randn(len(rows), generator=g) * bias_std


def scale_logits(convs, feats, target_std: float = 2.0, rows=None) -> None:
    """LSUV-style: rescale the (selected output rows of the) 1x1 head convs so their bias-free logits
    have std `target_std` over all anchors of the test images (random features are weak)."""
    with torch.no_grad():
        for lvl, conv in enumerate(convs):
            w = conv.weight if rows is None else conv.weight[rows]
            z = torch.cat([F.conv2d(f[lvl], w).flatten() for f in feats])
            w.mul_(target_std / float(z.std()))
            if rows is not None:
                conv.weight[rows] = w


def tune(name: str, apply_shift, evaluate, shifts, want_suppression: bool, target: int = 15):
    best = None
    verbose = os.environ.get("MAKE_DETECTORS_VERBOSE") == name
    for s in shifts:
        apply_shift(s)
        st = evaluate()
        counts = [x["kept"] for x in st]
        if verbose:
            print(s, [(x.get("candidates"), x["kept"], round(x["min_score_margin"], 4), round(x.get("min_iou_margin", 1), 4)) for x in st])
        ok = all(COUNT_RANGE[0] <= c <= COUNT_RANGE[1] for c in counts)
        ok &= all(x["min_score_margin"] > SCORE_MARGIN for x in st)
        ok &= all(x.get("min_iou_margin", 1.0) > IOU_MARGIN for x in st)
        ok &= all(x.get("min_score_gap", 1.0) > SCORE_GAP for x in st)
        if want_suppression:
            ok &= all(x["candidates"] > x["kept"] for x in st)
        if ok:
            cost = sum(abs(c - target) for c in counts)
            if best is None or cost < best[0]:
                best = (cost, s, counts)
    if best is None:
        return None
    apply_shift(best[1])
    return best[1], best[2]


# ----------------------------------------------------------------------------------------------------


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.iterdir():  # start clean, but keep the real GStreamer frame (needed without GStreamer)
        if f.name != BALL_PNG:
            f.unlink()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    rgbs = {Path(n).stem: load_rgb(n) for n in IMAGE_FILES}
    lb_cache = {}

    def lb(stem, h, w):
        if (stem, h, w) not in lb_cache:
            lb_cache[(stem, h, w)] = letterbox(rgbs[stem], h, w)
        return lb_cache[(stem, h, w)]

    models = {}
    tuned = {}
    saved_inputs = {}  # sha256 -> file: identical input tensors (same letterbox size) are stored once

    def save_input(name, x):
        digest = hashlib.sha256(np.ascontiguousarray(x, dtype="<f4").tobytes()).hexdigest()
        if digest not in saved_inputs:
            saved_inputs[digest] = save_f32(name, x)
        return {**saved_inputs[digest], "sha256": digest}

    cases = []
    shifts = [round(x, 2) for x in np.arange(-7.0, 0.0, 0.05)]

    def torch_out(model, x):
        with torch.no_grad():
            y = model(torch.from_numpy(x))
        return [t.numpy() for t in (y if isinstance(y, tuple) else (y,))]

    def search(key, build, target=15, want_suppression=True, seeds=range(1, 40)):
        """Try seeds in order until one model admits a bias shift meeting every constraint."""
        for seed in seeds:
            model, apply, evaluate = build(seed)
            shift = tune(key, apply, evaluate, shifts, want_suppression, target)
            if shift is not None:
                print(f"{key}: seed {seed}, bias shift {shift[0]:+.2f} -> detections per image {shift[1]}")
                tuned[key] = {"seed": seed, "bias_shift": shift[0]}
                return model
        sys.exit(f"{key}: no seed / bias shift satisfies the constraints; change the architecture")

    def shift_biases(convs, base, rows=None):
        def apply(s):
            with torch.no_grad():
                for conv, b in zip(convs, base):
                    nb = b.clone()
                    if rows is None:
                        nb += s
                    else:
                        nb[rows] += s
                    conv.bias.copy_(nb)

        return apply

    # ---------------- YOLOv8 layouts (static 3 classes 64x96; dynamic 80 classes at 64x64)
    def build_v8(seed, nc, hw, base_cls=None):
        h, w = hw
        torch.manual_seed(seed)
        model = YoloV8(nc).eval()
        reinit(model, seed)
        head = model.head
        feats = [model.backbone(torch.from_numpy(lb(st, h, w)[0])) for st in rgbs]
        if nc > 3:
            correlate_classes(head.cls, seed)
        scale_logits(head.cls, feats)
        with torch.no_grad():
            for conv in head.box:  # DFL logits: favour small distances (mean ~1.4 cells per side)
                conv.bias.copy_((-0.45 * torch.arange(head.reg_max, dtype=torch.float32)).repeat(4))
        base = [conv.bias.clone() for conv in head.cls]

        def evaluate():
            return [post_yolov8(torch_out(model, lb(st, h, w)[0])[0], (h, w), rgbs[st].shape[:2])[3] for st in rgbs]

        return model, shift_biases(head.cls, base), evaluate

    for key, nc, hw, dynamic, names in (
        ("yolov8", 3, (64, 96), False, NAMES3),
        ("yolov8-dynamic", 80, (64, 64), True, None),
    ):
        model = search(key, lambda seed: build_v8(seed, nc, hw))
        dyn = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}} if dynamic else None
        md = ultralytics_metadata("YOLOv8-tiny-dynamic" if dynamic else "YOLOv8-tiny", names, hw, stride=16, dynamic=dynamic)
        od = {"output0": ["batch", 4 + nc, "anchors"]} if dynamic else None
        export(model, torch.zeros(1, 3, *hw), OUT / f"{key}.onnx", ["images"], ["output0"], dyn, md, od, value_info=dynamic)
        models[key] = dict(model=model, file=f"{key}.onnx", layout="yolov8", hw=hw, names=names, post=post_yolov8)

    # ---------------- YOLOv5 (objectness), 4 classes, 64x64
    def build_v5(seed):
        torch.manual_seed(seed)
        v5 = YoloV5(nc=4).eval()
        reinit(v5, seed)
        obj_rows = [a * v5.no + 4 for a in range(v5.na)]
        cls_rows = [[a * v5.no + 5 + k for k in range(v5.nc)] for a in range(v5.na)]
        correlate_classes(v5.m, seed, own=0.5, bias_std=None, groups=cls_rows)
        scale_logits(v5.m, [v5.backbone(torch.from_numpy(lb(st, 64, 64)[0])) for st in rgbs], rows=obj_rows)
        with torch.no_grad():
            for conv in v5.m:
                b = conv.bias.view(v5.na, v5.no)
                b[:, 0:4] = 0.0  # centred xy offsets, wh = anchor
                b[:, 5:] += 0.8  # class scores mostly > .5: objectness decides
                conv.weight.view(v5.na, v5.no, -1)[:, 0:4].mul_(0.4)  # modest box jitter
        base = [conv.bias.clone() for conv in v5.m]

        def evaluate():
            return [post_yolov5(torch_out(v5, lb(st, 64, 64)[0])[0], (64, 64), rgbs[st].shape[:2])[3] for st in rgbs]

        return v5, shift_biases(v5.m, base, rows=obj_rows), evaluate

    v5 = search("yolov5", build_v5)
    md = {"stride": "16", "names": str(NAMES5)}  # what YOLOv5's export.py writes
    export(v5, torch.zeros(1, 3, 64, 64), OUT / "yolov5.onnx", ["images"], ["output0"], metadata=md)
    models["yolov5"] = dict(model=v5, file="yolov5.onnx", layout="yolov5", hw=(64, 64), names=NAMES5, post=post_yolov5)

    # ---------------- end2end (top-k in graph), 3 classes, 64x64, k=50
    def build_e2e(seed):
        torch.manual_seed(seed)
        e2e = End2End(nc=3, k=50).eval()
        reinit(e2e, seed)
        scale_logits(e2e.head.cls, [e2e.backbone(torch.from_numpy(lb(st, 64, 64)[0])) for st in rgbs])
        with torch.no_grad():
            for conv in e2e.head.box:
                conv.bias.copy_((-0.45 * torch.arange(e2e.head.reg_max, dtype=torch.float32)).repeat(4))
        base = [conv.bias.clone() for conv in e2e.head.cls]

        def evaluate():
            return [post_end2end(torch_out(e2e, lb(st, 64, 64)[0])[0], (64, 64), rgbs[st].shape[:2])[3] for st in rgbs]

        return e2e, shift_biases(e2e.head.cls, base), evaluate

    e2e = search("end2end", build_e2e, want_suppression=False)
    md = ultralytics_metadata("YOLOv10-tiny", NAMES3, (64, 64), stride=16, end2end=True)
    export(e2e, torch.zeros(1, 3, 64, 64), OUT / "end2end.onnx", ["images"], ["output0"], metadata=md)
    models["end2end"] = dict(model=e2e, file="end2end.onnx", layout="end2end", hw=(64, 64), names=NAMES3, post=post_end2end)

    # ---------------- DETR (RF-DETR naming), 20 queries, 5 classes, 64x64, ImageNet normalisation
    detr_inputs = {st: detr_preprocess(rgbs[st], 64, 64) for st in rgbs}

    def build_detr(seed):
        torch.manual_seed(seed)
        detr = TinyDETR().eval()
        reinit(detr, seed)
        g = torch.Generator().manual_seed(seed + 1000)
        with torch.no_grad():
            detr.pos.copy_(torch.randn(detr.pos.shape, generator=g) * 0.5)
            detr.query.copy_(torch.randn(detr.query.shape, generator=g))
            ref = torch.empty(1, 20, 4)
            ref[..., 0:2] = torch.rand(1, 20, 2, generator=g) * 0.7 + 0.15  # centres spread over the image
            ref[..., 2:4] = torch.rand(1, 20, 2, generator=g) * 0.3 + 0.12  # sizes 12..42 % of the image
            detr.ref.copy_(torch.logit(ref))
            detr.box.weight.mul_(0.3)
            detr.box.bias.zero_()
        base = [detr.cls.bias.clone()]

        def evaluate():
            res = []
            for st in rgbs:
                d, l = torch_out(detr, detr_inputs[st])
                res.append(post_detr(d, l, rgbs[st].shape[:2])[3])
            return res

        return detr, shift_biases([detr.cls], base), evaluate

    detr = search("detr", build_detr, target=8, want_suppression=False)
    export(detr, torch.zeros(1, 3, 64, 64), OUT / "detr.onnx", ["input"], ["dets", "labels"])
    (OUT / "detr.labels.txt").write_text("".join(f"{n}\n" for n in DETR_LABELS))
    models["detr"] = dict(model=detr, file="detr.onnx", layout="detr", hw=(64, 64), names=None, post=None)

    # ---------------- broken models
    torch.manual_seed(6)
    bad = BadLayout().eval()
    reinit(bad, 6)
    export(bad, torch.zeros(1, 3, 64, 64), OUT / "bad-layout.onnx", ["images"], ["output0"])
    torch.manual_seed(7)
    wr = WrongRank().eval()
    reinit(wr, 7)
    export(wr, torch.zeros(1, 64, 64), OUT / "wrong-rank.onnx", ["images"], ["output0"])

    # ---------------- goldens from onnxruntime
    for key, spec in models.items():
        sess = session(OUT / spec["file"])
        md = {p.key: p.value for p in onnx.load(str(OUT / spec["file"])).metadata_props}
        if "names" in md:
            names = ast.literal_eval(md["names"])
            label_src = "metadata names"
        elif key == "detr":
            names = dict(enumerate((OUT / "detr.labels.txt").read_text().split("\n")[:-1]))
            label_src = "detr.labels.txt"
        else:
            names = dict(enumerate(COCO80))
            label_src = "COCO-80 fallback"
        spec.update(session=sess, metadata=md, label_names=names, label_source=label_src, io=io_desc(sess))
        h, w = spec["hw"]
        for image in IMAGE_FILES:
            stem = Path(image).stem
            rgb = rgbs[stem]
            h0, w0 = rgb.shape[:2]
            if key == "detr":
                x, geo = detr_preprocess(rgb, h, w), None
            else:
                x, geo = lb(stem, h, w)
            in_name = sess.get_inputs()[0].name
            outs = sess.run(None, {in_name: x})
            ref = torch_out(spec["model"], x)
            torch_diff = max(float(np.abs(a - b).max()) for a, b in zip(outs, ref))
            assert torch_diff < 1e-3, (key, stem, torch_diff)
            if key == "detr":
                boxes, scores, cls, stats = post_detr(outs[0], outs[1], (h0, w0))
            else:
                boxes, scores, cls, stats = spec["post"](outs[0], (h, w), (h0, w0))
            order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # stable, highest first
            dets = [
                {
                    "class_id": int(cls[i]),
                    "label": names[int(cls[i])],
                    "score": f32(scores[i]),
                    "box": [f32(v) for v in boxes[i].tolist()],
                }
                for i in order
            ]
            case = {
                "model": key,
                "model_file": spec["file"],
                "layout": spec["layout"],
                "image": stem,
                "image_file": f"../images/{image}",
                "orig_width": w0,
                "orig_height": h0,
                "input": {"name": in_name, **save_input(f"{key}.{stem}.input.bin", x)},
                "outputs": {
                    o.name: save_f32(f"{key}.{stem}.{o.name}.bin", a) for o, a in zip(sess.get_outputs(), outs)
                },
                "thresholds": {"conf": CONF, "iou": None if spec["layout"] in ("end2end", "detr") else IOU, "max_det": MAX_DET},
                "preprocess": "imagenet-resize" if key == "detr" else "letterbox",
                "letterbox": geo,
                "stats": {**stats, "max_abs_diff_vs_torch": torch_diff},
                "detections": dets,
            }
            cases.append(case)
            print(f"{key:15s} {stem:18s} {len(dets):3d} detections  {stats}")

    # dynamic model at a second size: anchors follow the input
    dyn = models["yolov8-dynamic"]["session"]
    y = dyn.run(None, {"images": np.full((1, 3, 96, 128), PAD, np.float32)})[0]
    assert y.shape == (1, 84, 12 * 16 + 6 * 8), y.shape
    dynamic_check = {"input_hw": [96, 128], "output0_shape": list(y.shape)}

    ball = make_ball()
    predictor = predictor_check(cases)

    model_info = {}
    for key, spec in models.items():
        model_info[key] = {
            "file": spec["file"],
            "layout": spec["layout"],
            **spec["io"],
            "metadata": spec["metadata"],
            "label_source": spec["label_source"],
            "labels": [spec["label_names"][i] for i in sorted(spec["label_names"])],
            "golden_input_hw": list(spec["hw"]),
        }
    for f in ("bad-layout.onnx", "wrong-rank.onnx", "ball.onnx"):
        model_info[f[:-5]] = {"file": f, **io_desc(session(OUT / f))}
    model_info["yolov8-dynamic"]["dynamic_check"] = dynamic_check

    goldens = {
        "generator": "models/tools/make_detectors.py",
        "note": "paths are relative to this directory; *.bin are raw little-endian f32, C order; identical "
        "input tensors are stored once (the 64x64 letterbox inputs of yolov8-dynamic, yolov5 and end2end are the "
        "same file: use each case's input.file)",
        "backend": f"onnxruntime {ort.__version__} CPUExecutionProvider (graph optimisations off, 1 thread)",
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "ultralytics": ultralytics.__version__,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
        },
        "reference": {
            "decode": "cv2.imread (BGR) -> cv2.cvtColor BGR2RGB",
            "letterbox": "ultralytics.data.augment.LetterBox(new_shape=(H, W), auto=False, scaleup=True, center=True), "
            "then HWC->CHW, float32 / 255",
            "detr_preprocess": "cv2.resize to 64x64 INTER_LINEAR, float32 / 255, (x - mean) / std with ImageNet mean/std",
            "yolov8": "ultralytics.utils.nms.non_max_suppression(conf, iou, max_det) (class-aware, best class, "
            "torchvision.ops.nms on boxes + class * 7680) -> ultralytics.utils.ops.scale_boxes(input_hw, boxes, orig_hw)",
            "yolov5": "YOLOv5 utils/general.py non_max_suppression logic (make_detectors.nms_yolov5: obj > conf, "
            "conf = obj * cls, best class, conf > conf, sort, torchvision.ops.nms on boxes + class * 7680, max_det) "
            "-> ultralytics.utils.ops.scale_boxes",
            "end2end": "ultralytics.utils.nms.non_max_suppression end-to-end branch (rows with score > conf, "
            "first max_det) -> ultralytics.utils.ops.scale_boxes",
            "detr": "score = sigmoid(max logit), class = argmax; keep score > conf; cxcywh -> xyxy * (W, H), "
            "clipped to the image; no NMS",
            "sort": "every detection list by score, highest first (stable)",
        },
        "thresholds": {"conf": CONF, "iou": IOU, "max_det": MAX_DET},
        "safety_margins": {"score": SCORE_MARGIN, "iou": IOU_MARGIN, "score_gap": SCORE_GAP},
        "tuning": tuned,
        "coco80": COCO80,
        "models": model_info,
        "cases": cases,
        "ball": ball,
        "ultralytics_predictor_check": predictor,
    }
    (OUT / "goldens.json").write_text(json.dumps(goldens, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.1f} KiB in {OUT}")


# ----------------------------------------------------------------------------------------------------
# ball.onnx: hand-built graph


def build_ball(h=96, w=128) -> onnx.ModelProto:
    c = lambda name, vals, shape: helper.make_tensor(name, TensorProto.FLOAT, shape, vals)
    xs = [x + 0.5 for x in range(w)]
    ys = [y + 0.5 for y in range(h)]
    inits = [
        c("thr", [0.75], []),
        c("gain", [40.0], []),
        c("eps", [1e-6], []),
        c("inv_pi", [1.0 / math.pi], []),
        c("area_off", [12.0], []),
        c("half", [0.5], []),
        c("X", xs, [1, 1, 1, w]),
        c("Y", ys, [1, 1, h, 1]),
        c("cls", [0.0], [1, 1, 1]),
        helper.make_tensor("all_axes", TensorProto.INT64, [3], [1, 2, 3]),
        helper.make_tensor("shape111", TensorProto.INT64, [3], [1, 1, 1]),
    ]
    n = helper.make_node
    nodes = [
        n("ReduceMean", ["images"], ["grey"], axes=[1], keepdims=1),  # [1,1,H,W]
        n("Sub", ["grey", "thr"], ["g0"]),
        n("Mul", ["g0", "gain"], ["g1"]),
        n("Sigmoid", ["g1"], ["mask"]),
        n("ReduceSum", ["mask", "all_axes"], ["area"], keepdims=1),  # [1,1,1,1]
        n("Mul", ["mask", "X"], ["mx"]),
        n("Mul", ["mask", "Y"], ["my"]),
        n("ReduceSum", ["mx", "all_axes"], ["sx"], keepdims=1),
        n("ReduceSum", ["my", "all_axes"], ["sy"], keepdims=1),
        n("Add", ["area", "eps"], ["area_e"]),
        n("Div", ["sx", "area_e"], ["cx4"]),
        n("Div", ["sy", "area_e"], ["cy4"]),
        n("Mul", ["area", "inv_pi"], ["r2"]),
        n("Sqrt", ["r2"], ["r4"]),
        n("Sub", ["area", "area_off"], ["s0"]),
        n("Mul", ["s0", "half"], ["s1"]),
        n("Sigmoid", ["s1"], ["score4"]),
        n("Reshape", ["cx4", "shape111"], ["cx"]),
        n("Reshape", ["cy4", "shape111"], ["cy"]),
        n("Reshape", ["r4", "shape111"], ["r"]),
        n("Reshape", ["score4", "shape111"], ["score"]),
        n("Sub", ["cx", "r"], ["x1"]),
        n("Sub", ["cy", "r"], ["y1"]),
        n("Add", ["cx", "r"], ["x2"]),
        n("Add", ["cy", "r"], ["y2"]),
        n("Concat", ["x1", "y1", "x2", "y2", "score", "cls"], ["output0"], axis=2),
    ]
    graph = helper.make_graph(
        nodes,
        "ball",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 1, 6])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lookout-make_detectors")
    m.ir_version = 8
    m.doc_string = (
        "Finds the white ball of GStreamer videotestsrc pattern=ball: mask = sigmoid((mean_c - 0.75) * 40), "
        "area = sum(mask), centroid of pixel centres, r = sqrt(area / pi); output0 = x1, y1, x2, y2, "
        "sigmoid((area - 12) * 0.5), class 0"
    )
    for k, v in {"names": str({0: "ball"}), "stride": "1", "task": "detect", "imgsz": str([h, w])}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m, full_check=True)
    return m


def disc_frame(h, w, cx, cy, r) -> np.ndarray:
    """Black HxW RGB frame, white hard-edged disc: pixel (x, y) white iff its centre (x+.5, y+.5) is
    within r of (cx, cy). Returned as the model input [1,3,h,w] f32 in 0..1."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    m = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.float32)
    return np.repeat(m[None, None], 3, 1)


def make_ball() -> dict:
    path = OUT / "ball.onnx"
    onnx.save(build_ball(), str(path))
    sess = session(path)
    run = lambda x: [f32(v) for v in sess.run(None, {"images": x})[0].reshape(-1)]
    res = {"synthetic": []}
    for cx, cy, r in ((40.0, 30.0, 8.0), (100.5, 70.25, 8.0), (64.0, 48.0, 5.0)):
        out = run(disc_frame(96, 128, cx, cy, r))
        expect = [cx - r, cy - r, cx + r, cy + r]
        err = max(abs(a - b) for a, b in zip(out[:4], expect))
        assert err < 1.5 and out[4] > 0.99 and out[5] == 0.0, (cx, cy, r, out)
        res["synthetic"].append({"disc": {"cx": cx, "cy": cy, "r": r}, "expect_box": expect, "output0": out, "max_box_err": err})
    black = run(np.zeros((1, 3, 96, 128), np.float32))
    assert black[4] < 0.01, black
    res["black"] = {"output0": black}
    grey = run(np.full((1, 3, 96, 128), PAD, np.float32))
    assert grey[4] < 0.01, grey
    res["grey_114"] = {"output0": grey}
    res["gstreamer"] = ball_gstreamer(sess, run)
    return res


def ball_check(run, i: int, rgb: np.ndarray) -> dict:
    x, geo = letterbox(rgb, 96, 128)  # 320x240 -> exactly 0.4, no padding
    assert (geo["pad_left"], geo["pad_top"], geo["new_unpad_w"]) == (0, 0, 128), geo
    out = run(x)
    # truth: intensity centroid / equivalent radius in the 320x240 frame, times 0.4
    m = rgb.astype(np.float64).mean(2) / 255
    yy, xx = np.mgrid[0:240, 0:320] + 0.5
    cx, cy, r = (m * xx).sum() / m.sum() * 0.4, (m * yy).sum() / m.sum() * 0.4, math.sqrt(m.sum() / math.pi) * 0.4
    expect = [cx - r, cy - r, cx + r, cy + r]
    err = max(abs(a - b) for a, b in zip(out[:4], expect))
    assert err < 1.5 and out[4] > 0.99, (i, out, expect)
    return {"frame": i, "expect_box_128x96": [round(v, 3) for v in expect], "output0": out, "max_box_err": err}


def ball_gstreamer(sess, run) -> dict | None:
    gst = shutil.which("gst-launch-1.0")
    res = {}
    if gst is None:
        print("gst-launch-1.0 not found: checking only the committed real frame")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [gst, "-q", "videotestsrc", "pattern=ball", "num-buffers=37", "!",
                 "video/x-raw,width=320,height=240,format=RGB,framerate=30/1", "!",
                 "multifilesink", f"location={tmp}/f%02d.rgb"],
                check=True,
            )  # fmt: skip
            res["gst_version"] = subprocess.run([gst, "--version"], capture_output=True, text=True).stdout.split("\n")[1]
            res["caps"] = "video/x-raw,width=320,height=240,format=RGB,framerate=30/1"
            frames = {i: np.fromfile(f"{tmp}/f{i:02d}.rgb", np.uint8).reshape(240, 320, 3) for i in (0, 20, 36)}
        res["frames"] = [ball_check(run, i, rgb) for i, rgb in frames.items()]
        # keep one real frame (PNG, lossless) so the Rust side can test without GStreamer
        cv2.imwrite(str(OUT / BALL_PNG), cv2.cvtColor(frames[20], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not (OUT / BALL_PNG).exists():
        return res or None
    rgb = cv2.cvtColor(cv2.imread(str(OUT / BALL_PNG), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    c = ball_check(run, 20, rgb)
    res["saved_frame"] = {"file": BALL_PNG, "frame": 20, "rgb_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
                          "letterbox": "LetterBox((96, 128)) = cv2.resize INTER_LINEAR 320x240 -> 128x96, /255",
                          "output0": c["output0"], "expect_box_128x96": c["expect_box_128x96"]}  # fmt: skip
    return res


# ----------------------------------------------------------------------------------------------------
# cross-check against Ultralytics' own predictor (AutoBackend on the ONNX file, reads our metadata)


def predictor_check(cases) -> dict:
    from ultralytics import YOLO

    out = {}
    for key, imgsz in (("yolov8", (64, 96)), ("end2end", (64, 64))):
        model = YOLO(str(OUT / f"{key}.onnx"), task="detect")
        worst, counts = 0.0, []
        for case in (c for c in cases if c["model"] == key):
            bgr = cv2.imread(str(OUT / case["image_file"]), cv2.IMREAD_COLOR)
            r = model.predict(bgr, imgsz=imgsz, conf=CONF, iou=IOU, max_det=MAX_DET, verbose=False, device="cpu")[0]
            got = np.concatenate([r.boxes.xyxy.numpy(), r.boxes.conf.numpy()[:, None], r.boxes.cls.numpy()[:, None]], 1)
            want = np.asarray([d["box"] + [d["score"], d["class_id"]] for d in case["detections"]]).reshape(-1, 6)
            assert got.shape == want.shape, (key, case["image"], got.shape, want.shape)
            assert [r.names[int(c)] for c in got[:, 5]] == [d["label"] for d in case["detections"]]
            worst = max(worst, float(np.abs(got - want).max()) if len(want) else 0.0)
            counts.append(len(want))
        assert worst < 1e-3, (key, worst)
        out[key] = {"images": len(counts), "detections": counts, "max_abs_diff": worst}
    print("ultralytics predictor agrees:", out)
    return out


if __name__ == "__main__":
    main()
