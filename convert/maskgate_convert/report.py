"""Model card and comparison report: Markdown with PNG plots (no face images from the data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _pct(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{100 * float(v):.1f}%"


def _rate(r: dict[str, Any] | None) -> str:
    if not r or r.get("value") is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{100 * r['value']:.1f}% ({r['k']}/{r['n']}, 95% CI {100 * lo:.1f}-{100 * hi:.1f})"


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    for k in ("loss", "val_loss"):
        if k in history:
            ax[0].plot(range(1, len(history[k]) + 1), history[k], label=k)
    for k in ("accuracy", "val_accuracy"):
        if k in history:
            ax[1].plot(range(1, len(history[k]) + 1), history[k], label=k)
    for a, t in zip(ax, ("loss", "accuracy"), strict=True):
        a.set_xlabel("epoch")
        a.set_title(t)
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion(conf: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = conf["labels"]
    m = np.array(conf["matrix"])
    rows = [i for i in range(len(labels)) if m[i].sum() > 0]
    cols = [j for j in range(len(labels)) if m[:, j].sum() > 0 or j in rows]
    m = m[np.ix_(rows, cols)]
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2, 1.1 * len(rows) + 1.5))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(cols)), [labels[j] for j in cols], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [labels[i] for i in rows])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_groups(groups: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(groups)
    vals = [groups[k]["balanced_accuracy_allow_deny"] or 0 for k in keys]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(keys) + 1.2))
    ax.barh(keys, vals, color="#4a8")
    ax.set_xlim(min(vals + [0.8]) - 0.02, 1.0)
    ax.set_xlabel("allow/deny balanced accuracy (int8)")
    ax.set_title(title)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {100 * v:.1f}%", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def model_card(run_dir: Path, out_dir: Path, commands: str) -> Path:
    """Write ``MODEL_CARD.md`` and its plots for one build into ``out_dir``."""
    m = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    name = m["architecture"]
    plot_history(history, out_dir / f"{name}-training.png")
    plot_confusion(m["test"]["int8"]["confusion"], out_dir / f"{name}-confusion.png", "grouped test split, int8")
    plot_groups(m["test"]["int8_by_source"], out_dir / f"{name}-by-source.png", "by source")
    plot_groups(m["test"]["int8_by_size"], out_dir / f"{name}-by-size.png", "by face width (source image)")
    t8, tf = m["test"]["int8"], m["test"]["float"]
    env = m["environment"]
    lines = [
        f"# Model card: maskgate `{name}` classifier",
        "",
        "**For evaluation and research only.** The training data's licences are research / "
        "non-commercial (CelebA; MaskedFace-Net CC BY-NC-SA 4.0; web-scraped images), and the "
        "weights inherit them. Retrain on your own data with `maskgate-convert train --data DIR`.",
        "",
        f"- Labels: {', '.join(m['labels'])}",
        f"- Parameters: {m['params']:,}; multiply-adds per face: {m['multiply_adds']:,}",
        f"- int8 model: {m['int8_bytes']:,} bytes; latency (1 thread, {env['processor']}): "
        f"int8 {m['latency_ms_int8_1thread']:.3f} ms, float {m['latency_ms_float_1thread']:.3f} ms",
        f"- Epochs run: {m['epochs_run']} (early stopping on validation loss); training time "
        f"{m['train_seconds']:.0f} s on {env['processor']}",
        f"- Quantization: full integer (int8 in, int8 out), representative set of 300 training crops; "
        f"all tensors integer: {m['checks']['all_integer']}; ops: {', '.join(m['checks']['ops'])}; "
        f"ops not on the Edge TPU list: {m['checks']['ops_not_on_edgetpu_list'] or 'none'} "
        f"(list: {m['checks']['edgetpu_ops_source']})",
        f"- Edge TPU: {'compiled' if m['checks']['edgetpu'].get('compiled') else m['checks']['edgetpu'].get('reason')}",
        f"- int8 and float agree on {_pct(m['int8_float_agreement_faces'])} of test faces",
        f"- Versions: TensorFlow {env['tensorflow']}, OpenCV {env['opencv']}, NumPy {env['numpy']}, "
        f"Python {env['python']}; commit {env['commit'] or 'n/a'}",
        "",
        "## How it was built",
        "",
        "```",
        commands.strip(),
        "```",
        "",
        "## Data",
        "",
        "Every image was re-cropped with the device's YuNet detector and crop rule "
        "(`maskgate.crop`). Images where no face was found were dropped; the counts below are per "
        "source and class, because dropping correlates with the label (masked faces are harder "
        "to detect), which the scene evaluation exposes. Near-duplicates were grouped and "
        "train/val/test split by group (signature below). Many training images are tight crops: "
        "the crop rule's square reaches past the image, and the part outside (last column, mean "
        "share of the crop) is filled by edge replication, in streaks that differ by source and "
        "label. Training replaces that padding with background patches or flat colour for most "
        "faces (`FILL_P` in `maskgate_convert.build`), so the streaks cannot tell the label and a "
        "tight crop looks like a face in a scene, as at the door.",
        "",
        "| source | class | kept | no face (dropped) | several faces (largest kept) | crop outside the image |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    bundle_manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    data = bundle_manifest["data"]
    padding = data.get("padding", {})
    for src, d in data["located"].items():
        for lab, c in d.items():
            pad = padding.get(src, {}).get(lab)
            lines.append(f"| {src} | {lab} | {c.get('kept', 0)} | {c.get('no_face', 0)} | {c.get('several', 0)} | "
                         f"{'n/a' if pad is None else f'{pad:.0%}'} |")
    lines += [
        "",
        f"Near-duplicate signature: {data['signature']}; {data['near_duplicate_groups']:,} groups, "
        f"{data['images_in_multi_member_groups']:,} images share a group with another. "
        f"Background (`no_face`) patches: {data['no_face_patches']} from the tuning half of the scenes only. "
        f"Split sizes (faces + background): {m['train_sizes']}.",
        "",
        "## Results on the grouped test split (never used for tuning)",
        "",
        "| metric | int8 | float |",
        "| --- | --- | --- |",
        f"| allow/deny balanced accuracy | {_pct(t8['balanced_accuracy_allow_deny'])} | "
        f"{_pct(tf['balanced_accuracy_allow_deny'])} |",
    ]
    for lab in m["labels"]:
        if lab in t8["per_class_recall"]:
            lines.append(f"| recall {lab} | {_rate(t8['per_class_recall'][lab])} | "
                         f"{_rate(tf['per_class_recall'][lab])} |")
    lines += [f"| wrong allows | {t8['wrong_allow']} | {tf['wrong_allow']} |", ""]
    if "no_face_recall_int8" in m["test"]:
        nf = _pct(m["test"]["no_face_recall_int8"])
        lines += [f"Background patches rejected as `no_face` (int8): {nf}.", ""]
    lines += [f"![training curves]({name}-training.png)", "",
              f"![confusion matrix]({name}-confusion.png)", "",
              "### By source (int8)", "", "| source | n | allow/deny bal. acc. | bare-face recall | per-class recall |",
              "| --- | ---: | --- | --- | --- |"]
    for src, g in m["test"]["int8_by_source"].items():
        pcs = "; ".join(f"{k} {_pct(v['value'])}" for k, v in g["per_class_recall"].items())
        lines.append(f"| {src} | {g['n']} | {_pct(g['balanced_accuracy_allow_deny'])} | "
                     f"{_rate(g['bare_face_recall'])} | {pcs} |")
    lines += ["", f"![by source]({name}-by-source.png)", "", "### By face size (int8)", "",
              "| face width in source image | n | allow/deny bal. acc. |", "| --- | ---: | --- |"]
    for k, g in m["test"]["int8_by_size"].items():
        lines.append(f"| {k} | {g['n']} | {_pct(g['balanced_accuracy_allow_deny'])} |")
    lines += ["", f"![by size]({name}-by-size.png)", ""]
    if "scenes_test_half" in m:
        lines += ["## Whole pipeline on the scene test half (street photos, detector + classifier)", "",
                  "Faces are matched to annotations at IoU >= 0.3. 'Right' means a masked face allowed, or a bare/"
                  "wrongly-masked face classified as such (a missed or `no_face` face is not right).", "",
                  "| faces | model | n | detected | masked detected | right decision | bare-face recall "
                  "| wrong allows |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
        kinds = {"int8": m["scenes_test_half"]["int8"], "float": m["scenes_test_half"]["float"]}
        if "peer_aizoo_scenes_test_half" in m:
            kinds["AIZOO peer"] = m["peer_aizoo_scenes_test_half"]
        for key in (">=48px", "<48px", "all"):
            for kind, res in kinds.items():
                s = res[key]
                dm = s["detected_masked"]
                lines.append(f"| {key} | {kind} | {s['faces']} | {s['detected']} | {dm[0]}/{dm[1]} | "
                             f"{s['right_decision']} ({_pct(s['right_decision'] / max(s['faces'], 1))}) | "
                             f"{_rate(s['door']['bare_face_recall'])} | {s['door']['wrong_allow']} |")
        lines.append("")
    path = out_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
