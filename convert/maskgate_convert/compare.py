"""The one comparison table across architectures trained under the same budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _p(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}%"


def training_macs(m: dict[str, Any]) -> float:
    """Multiply-adds spent training a run: epochs x training faces x forward MACs x 3 (a backward
    pass costs about twice the forward one)."""
    return float(m["epochs_run"]) * float(m["train_sizes"]["train"]) * float(m["multiply_adds"]) * 3.0


def _commits(runs: dict[str, dict[str, Any]], cross: dict[str, dict[str, Any]],
             shipped: dict[str, Any] | None) -> str:
    """Which commit each run was trained from, grouped: runs reused with --resume may be older."""
    named = {**runs, **{f"default on {src} only": m for src, m in cross.items()}}
    if shipped is not None:
        named["shipped"] = shipped
    by_commit: dict[str, list[str]] = {}
    for name, m in named.items():
        by_commit.setdefault(m.get("environment", {}).get("commit") or "n/a", []).append(name)
    return "; ".join(f"commit {c} ({', '.join(names)})" for c, names in by_commit.items())


def write_compare(runs: dict[str, dict[str, Any]], cross: dict[str, dict[str, Any]], report: Path,
                  epochs: int, shipped: dict[str, Any] | None = None) -> str:
    head = ("| model | classes | bal. acc. float | bal. acc. int8 | bare-face recall int8 | "
            "scenes >=48px right | scenes bare-face recall | params | int8 size | MACs | int8 latency (1 thr) | "
            "training compute |")
    rows = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = runs.get("seed")
    rows_src = dict(runs)
    if shipped is not None:
        o = shipped["options"]
        label = f"default, shipped (all data, early stopping: {shipped['epochs_run']} of {o['epochs']} epochs)"
        rows_src[label] = shipped
    for name, m in rows_src.items():
        t8, tf = m["test"]["int8"], m["test"]["float"]
        sc = m.get("scenes_test_half", {}).get("int8", {}).get(">=48px")
        scene_right = f"{sc['right_decision']}/{sc['faces']}" if sc else "n/a"
        scene_bare = _p((sc["door"]["bare_face_recall"] or {}).get("value")) if sc else "n/a"
        lat = m["latency_ms_int8_1thread"]
        ratio = f" ({_times(base['latency_ms_int8_1thread'] / lat)} than seed)" if base and name != "seed" else ""
        rows.append(f"| {name} | {len(m['labels'])} | {_p(tf['balanced_accuracy_allow_deny'])} | "
                    f"{_p(t8['balanced_accuracy_allow_deny'])} | {_p((t8['bare_face_recall'] or {}).get('value'))} | "
                    f"{scene_right} | {scene_bare} | {m['params']:,} | {m['int8_bytes']:,} | "
                    f"{m['multiply_adds']:,} | {lat:.3f} ms{ratio} | {training_macs(m) / 1e12:.1f} T MAC |")
    peer = next((m["peer_aizoo_scenes_test_half"] for m in runs.values() if "peer_aizoo_scenes_test_half" in m), None)
    if peer:
        sc = peer[">=48px"]
        rows.append(f"| AIZOO peer (one-stage detector) | 2 | n/a | n/a | n/a | {sc['right_decision']}/{sc['faces']} | "
                    f"{_p((sc['door']['bare_face_recall'] or {}).get('value'))} | n/a | n/a | n/a | n/a | n/a |")
    table = "\n".join(rows)
    env = next(iter(runs.values()))["environment"] if runs else {}
    lines = [
        "# maskgate-convert compare",
        "",
        f"Every architecture trained for the same budget of {epochs} epochs on the same grouped split; "
        "balanced accuracy is on the door's question (allow = with_mask, deny = anything else) on the "
        "grouped test split; scene numbers are the whole pipeline (YuNet + classifier) on the scene test half. "
        "Latency: int8 model, ai-edge-litert, 1 thread, this machine; every model timed again at the end of "
        "the comparison, in turns (20 rounds of 10 runs each), so the ratios share one machine load. "
        + ("The 'shipped' row is the committed bundle, trained on all the data until its validation loss "
           "stopped improving: not the same budget, shown for reference. " if shipped is not None else
           "The shipped bundle, trained on all the data until its validation loss stopped improving, is "
           "not in this table (not the same budget): its numbers are in its manifest and the README. ")
        + "Training compute is epochs x training faces x forward multiply-adds x 3.",
        "",
        f"Machine: {env.get('processor')} ({env.get('machine')}), Python {env.get('python')}, "
        f"TensorFlow {env.get('tensorflow')}; trained from {_commits(runs, cross, shipped)}.",
        "",
        table,
        "",
        *_budget_note(runs, shipped, epochs),
    ]
    if cross:
        lines += ["## Train on one source, test on another", "",
                  "The default architecture trained on one source's train split (plus maskedfacenet for the "
                  "incorrect class and background patches); every source's test split reported. A large drop "
                  "on the unseen source means the model learned the source, not the mask.", "",
                  "| trained on | tested on | n | allow/deny bal. acc. int8 | bare-face recall |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for src, m in cross.items():
            for tsrc, g in m["test"]["int8_by_source"].items():
                lines.append(f"| {src} | {tsrc} | {g['n']} | {_p(g['balanced_accuracy_allow_deny'])} | "
                             f"{_p((g['bare_face_recall'] or {}).get('value'))} |")
        lines.append("")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))
    return table


def _times(r: float) -> str:
    """A speed ratio as words: '64x faster', '1.8x slower'."""
    if r >= 1:
        return f"{r:.0f}x faster" if r >= 10 else f"{r:.1f}x faster"
    return f"{1 / r:.1f}x slower"


def _budget_note(runs: dict[str, dict[str, Any]], shipped: dict[str, Any] | None, epochs: int) -> list[str]:
    """One paragraph on what the epoch budget means for a model 100x smaller than the seed."""
    seed, default = runs.get("seed"), runs.get("default")
    if seed is None or default is None:
        return []
    b = {k: m["test"]["int8"]["balanced_accuracy_allow_deny"] for k, m in (("seed", seed), ("default", default))}
    lines = [f"Same {epochs}-epoch budget: seed {_p(b['seed'])}, default {_p(b['default'])} "
             f"({'the seed wins' if b['seed'] > b['default'] else 'default wins'} on epochs). "
             f"The epochs cost very differently: the seed's {epochs} epochs took "
             f"{training_macs(seed) / 1e12:.1f} T multiply-adds, the default's {training_macs(default) / 1e12:.2f} T."]
    if shipped is not None:
        s8 = shipped["test"]["int8"]["balanced_accuracy_allow_deny"]
        lines[0] += (f" Trained until its validation loss stopped improving ({shipped['epochs_run']} epochs, "
                     f"{training_macs(shipped) / 1e12:.1f} T multiply-adds, "
                     f"{training_macs(seed) / training_macs(shipped):.1f}x less training compute than the seed's "
                     f"budget), the default reaches {_p(s8)}, "
                     f"{'above' if s8 > b['seed'] else 'below'} the seed's {_p(b['seed'])}.")
    return [*lines, ""]
