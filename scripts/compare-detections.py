#!/usr/bin/env python3
"""Compares two `edge-agent detect` outputs (JSON lines), e.g. x86 vs aarch64 under qemu:
per image the same labels in the same order, scores within 0.02, boxes with IoU >= 0.9.
Exits 1 with the differences otherwise.

    scripts/compare-detections.py x86.jsonl arm.jsonl
"""
import json
import sys


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 1.0


def load(path):
    return {v["source"].rsplit("/", 1)[-1]: v["detections"] for v in map(json.loads, open(path)) if "detections" in v}


a, b = load(sys.argv[1]), load(sys.argv[2])
problems = [] if a.keys() == b.keys() and a else [f"different images: {sorted(a)} vs {sorted(b)}"]
for image in sorted(a.keys() & b.keys()):
    da, db = a[image], b[image]
    if [d["label"] for d in da] != [d["label"] for d in db]:
        problems.append(f"{image}: labels {[d['label'] for d in da]} vs {[d['label'] for d in db]}")
        continue
    for x, y in zip(da, db):
        if abs(x["score"] - y["score"]) > 0.02 or iou(x["box"], y["box"]) < 0.9:
            problems.append(f"{image}: {x} vs {y}")
print("\n".join(problems) if problems else f"same answers on {len(a)} images")
sys.exit(1 if problems else 0)
