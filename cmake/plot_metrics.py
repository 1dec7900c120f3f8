#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# cmake/plot_metrics.py: learning curves of a `grpo train` or `grpo distill` run as one PNG.
#   python3 cmake/plot_metrics.py RUN/metrics.jsonl curves.png
# Reads the JSONL metrics (one object per optimizer step, veRL-style slash keys) and draws, for
# `grpo train`, the cold-start SFT loss and, for the GRPO steps, reward / accuracy / format rate, KL,
# entropy, response length and gradient norm; for `grpo distill` (records with distill/loss), the
# distillation loss, its KL, the teacher-student agreement, the sampled accuracy (on-policy), the
# gradient norm and the learning rate. Needs matplotlib (Debian: python3-matplotlib); Agg backend,
# so no display is required. Non-finite values (written as null) are skipped.
import json
import math
import sys


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{number}: not a JSON object ({e})")
    return rows


def series(rows, key, smooth=1):
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(r.get("step", len(xs) + 1))
            ys.append(float(v))
    if smooth > 1 and ys:
        out, window = [], []
        for y in ys:
            window.append(y)
            if len(window) > smooth:
                window.pop(0)
            out.append(sum(window) / len(window))
        ys = out
    return xs, ys


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print("usage: plot_metrics.py METRICS.jsonl OUT.png", file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_metrics.py: matplotlib is not installed (Debian/Ubuntu: apt-get install python3-matplotlib; "
              "elsewhere: pip install matplotlib)", file=sys.stderr)
        return 1
    rows = load(argv[1])
    if not rows:
        print(f"plot_metrics.py: {argv[1]}: no metrics", file=sys.stderr)
        return 1
    if any("distill/loss" in r for r in rows):
        smooth = max(1, len(rows) // 25)
        panels = [
            (f"distillation loss (moving avg {smooth})", [("distill/loss", "loss", rows, smooth)]),
            ("KL estimate", [("distill/kl", "kl", rows, smooth)]),
            ("teacher-student top-1 agreement", [("distill/top1_agreement", "agreement", rows, smooth)]),
            ("sampled accuracy (on-policy)", [("accuracy", "accuracy", rows, smooth)]),
            ("grad norm (before clipping)", [("actor/grad_norm", "grad norm", rows, 1)]),
            ("learning rate", [("lr", "lr", rows, 1)]),
        ]
        return draw(plt, panels, argv, f"{len(rows)} distillation steps")
    sft = [r for r in rows if r.get("phase/sft") == 1]
    rl = [r for r in rows if r.get("phase/sft") != 1]
    smooth = max(1, len(rl) // 25)
    panels = [
        ("cold start (SFT)", [("sft/loss", "loss", sft, 1)]),
        (f"GRPO reward (moving avg {smooth})", [("critic/score/mean", "reward", rl, smooth),
                                                  ("accuracy", "accuracy", rl, smooth),
                                                  ("format_rate", "format rate", rl, smooth)]),
        ("KL to reference", [("actor/kl", "kl", rl, 1)]),
        ("entropy (nats/token)", [("actor/entropy", "entropy", rl, 1)]),
        ("response length (tokens)", [("response_length/mean", "mean", rl, 1), ("response_length/max", "max", rl, 1)]),
        ("grad norm (before clipping)", [("actor/grad_norm", "grad norm", rl, 1)]),
    ]
    return draw(plt, panels, argv, f"{len(sft)} SFT steps, {len(rl)} GRPO steps")


def draw(plt, panels, argv, summary):
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, curves) in zip(axes.flat, panels):
        drawn = False
        for key, label, subset, k in curves:
            xs, ys = series(subset, key, k)
            if xs:
                ax.plot(xs, ys, label=label, linewidth=1.2)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn and len(curves) > 1:
            ax.legend()
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(argv[1])
    fig.tight_layout()
    fig.savefig(argv[2], dpi=100)
    print(f"wrote {argv[2]} ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
