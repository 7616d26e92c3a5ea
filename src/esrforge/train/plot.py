"""`esrforge plot RUN_DIR -o curves.png`: loss and validation curves from a run's log.jsonl.

Drawn with OpenCV (already a dependency) so plotting needs no plotting library.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np

from esrforge.images import write_image

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
W, H, PAD, LEFT = 480, 260, 40, 64  # LEFT: room for a tick label such as 0.003356


def read_log(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, float]]]]:
    """(training series, validation series), each name -> [(iteration, value)]; the training
    series end with the learning rate ("lr"). `run_dir` may also be its log.jsonl."""
    path = run_dir if run_dir.name == "log.jsonl" and run_dir.is_file() else run_dir / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (is {run_dir} a run folder?)")
    train: dict[str, list[tuple[int, float]]] = {}
    val: dict[str, list[tuple[int, float]]] = {}
    bad = []
    lr: list[tuple[int, float]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
            it = int(rec["iter"])
        except (ValueError, KeyError, TypeError):
            bad.append(n)  # a line cut short by a killed run: plot the rest
            continue
        if "val" in rec:
            for k, v in rec["val"].items():
                val.setdefault(k, []).append((it, v))
            continue
        for k, v in rec.items():
            if k not in ("iter", "epoch", "images", "lr", "it_per_s") and isinstance(v, (int, float)):
                train.setdefault(k, []).append((it, float(v)))
        if isinstance(rec.get("lr"), (int, float)):
            lr.append((it, float(rec["lr"])))
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} unreadable line(s): {', '.join(map(str, bad[:5]))}", stacklevel=2)
    if lr:  # the schedule, to read the losses against (a decay step shows in them)
        train["lr"] = lr
    return train, val


def _panel(title: str, series: dict[str, list[tuple[int, float]]]) -> np.ndarray:
    img = np.full((H, W, 3), 255, np.uint8)
    cv2.putText(img, title, (PAD, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    pts = [p for s in series.values() for p in s if np.isfinite(p[1])]
    if not pts:
        cv2.putText(img, "(no data yet)", (PAD, H // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (120, 120, 120), 1, cv2.LINE_AA)
        return img
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    if y1 - y0 <= 1e-4 * max(abs(y0), abs(y1)) or y1 == y0:  # flat: a range whose ticks differ in 4 digits
        mid, half = (y0 + y1) / 2, max(abs(y0), abs(y1)) * 0.01 or 1e-3
        y0, y1 = mid - half, mid + half
    to_px = lambda x, y: (int(LEFT + (x - x0) / (x1 - x0) * (W - LEFT - PAD)), int(H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD)))  # noqa: E731
    cv2.rectangle(img, (LEFT, PAD - 10), (W - PAD, H - PAD), (200, 200, 200), 1)
    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        cv2.putText(img, f"{yv:.4g}", (2, to_px(x0, yv)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (80, 80, 80), 1, cv2.LINE_AA)
    for xv in sorted({round(x0 + frac * (x1 - x0)) for frac in (0.0, 0.5, 1.0)}):  # whole iterations, each once
        cv2.putText(img, f"{xv}", (to_px(xv, y0)[0] - 10, H - PAD + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (80, 80, 80), 1, cv2.LINE_AA)
    for i, (name, s) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        line = np.array([to_px(x, y) for x, y in s if np.isfinite(y)], np.int32)
        if len(line) > 1:
            cv2.polylines(img, [line], False, color, 1, cv2.LINE_AA)
        elif len(line) == 1:
            cv2.circle(img, tuple(int(v) for v in line[0]), 2, color, -1)
        if len(series) > 1:  # one series: the title names it
            cv2.putText(img, name, (W - PAD - 120, PAD + 14 * i + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return img


def plot_run(run_dir: Path, output: Path) -> Path:
    """One panel per training loss and per validation metric, two to a row.

    Each has its own axis: a GAN's discriminator loss (~0.7) on one axis with an L1 loss of
    0.004 would flatten the L1 curve into the bottom edge."""
    train, val = read_log(run_dir)
    panels = [_panel("learning rate (generator)" if k == "lr" else f"training {k}", {k: v}) for k, v in train.items()]
    panels = panels or [_panel("training losses", {})]
    panels += [_panel(f"validation {k}", {k: v}) for k, v in val.items()]
    if len(panels) % 2:
        panels.append(np.full_like(panels[0], 255))
    rows = [np.concatenate(panels[i : i + 2], axis=1) for i in range(0, len(panels), 2)]
    write_image(output, np.concatenate(rows, axis=0))
    return output
