#!/usr/bin/env python3
"""Paired differences and verdicts for the PLM experiment (PROTOCOL.md).

Reads the runs that `ferrite compare` wrote into one folder
(`<folder>/<variant>/seed<s>/report.json` and `log.jsonl`) and prints, as
Markdown, for every test set of the runs:

- every variant's mean ± std of the protocol's metrics;
- for every claim C1–C4, each variant's per-seed paired differences
  against the reference (`bce`; `focal` for C4), their mean ± sd and the
  verdict under the protocol's decision rule;
- the threshold-shift check (mean AP of the 3 rarest classes);
- the test positives of the rarest classes, and PLM's coverage of them.

Only the standard library is used, so the script runs wherever Python 3
does:

    python3 benches/results/analyze_plm.py benches/results/2026-12/multimnist-lt-if100
"""

import json
import math
import os
import sys

RARE = 3  # the protocol's "3 rarest" / "3 most frequent" classes

# Pairs compared beside the claims: PLM's masks against the re-weighting
# that is their expectation, PLM on focal loss against focal alone, and
# (single-label data) PLM against softmax cross-entropy.
SECONDARY = [
    ("plm(init=balanced)", "reweight(rhat=1)"),
    ("plm+focal", "focal"),
    ("plm", "ce"),
]


def label_of(folder_name):
    """The loss as `--losses` spelled it, from the run folder's name
    (`plm_lambda_0.01_` -> `plm(lambda=0.01)`; `plm+focal` stays)."""
    if not folder_name.endswith("_"):
        return folder_name
    name, _, rest = folder_name[:-1].partition("_")
    parts = rest.split("_")
    pairs = [f"{k}={v}" for k, v in zip(parts[0::2], parts[1::2])]
    return f"{name}({','.join(pairs)})"


def load_runs(folder):
    """{variant label: {seed: (report, log records)}}, seeds in order, in
    the order of `compare.json` where it exists."""
    runs = {}
    for variant in sorted(os.listdir(folder)):
        vdir = os.path.join(folder, variant)
        if not os.path.isdir(vdir):
            continue
        seeds = {}
        for entry in sorted(os.listdir(vdir)):
            report = os.path.join(vdir, entry, "report.json")
            if not entry.startswith("seed") or not os.path.exists(report):
                continue
            with open(report) as f:
                rep = json.load(f)
            log = []
            log_path = os.path.join(vdir, entry, "log.jsonl")
            if os.path.exists(log_path):
                with open(log_path) as f:
                    log = [json.loads(line) for line in f if line.strip()]
            seeds[int(entry[4:])] = (rep, log)
        if seeds:
            runs[label_of(variant)] = dict(sorted(seeds.items()))
    order = []
    compare = os.path.join(folder, "compare.json")
    if os.path.exists(compare):
        with open(compare) as f:
            order = [row["variant"] for row in json.load(f)["rows"]]
    rank = {label: i for i, label in enumerate(order)}
    return dict(sorted(runs.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def sets_of(report):
    """[(set name, report of that set)]: `test` first, then the others."""
    out = [("test", report)]
    for name, other in sorted((report.get("other_sets") or {}).items()):
        out.append((name, other))
    return out


def rarest(per_class, k=RARE):
    rows = sorted(per_class, key=lambda r: (r["train_positives"], r["class"]))
    return rows[:k]


def metric(report, name):
    """A summary metric, or `rare3_ap` (mean AP of the 3 rarest classes)."""
    if name == "rare3_ap":
        rows = rarest(report["per_class"])
        return sum(r["average_precision"] for r in rows) / len(rows)
    return report["summary"].get(name)


def mean_sd(xs):
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else float("nan")
    return m, sd


def verdict(diffs, sign=+1, at_least_as_good=False):
    """The protocol's rule on paired differences `diffs` for a claim that
    predicts `sign` (+1: rises). With `at_least_as_good` (C4) the claim
    holds unless the differences are significantly negative."""
    n = len(diffs)
    if n < 2:
        return "inconclusive", "fewer than 2 seeds"
    m, sd = mean_sd(diffs)
    significant = abs(m) > 2 * sd / math.sqrt(n)
    all_pos = all(d * sign > 0 for d in diffs)
    all_neg = all(d * sign < 0 for d in diffs)
    if at_least_as_good:
        if all_neg and significant:
            return "does not hold", "worse in every seed, |mean| > 2·sd/√n"
        return "holds", "not significantly worse"
    if all_pos and significant:
        return "holds", "same sign in every seed, |mean| > 2·sd/√n"
    if all_neg and significant:
        return "refuted", "opposite sign in every seed, |mean| > 2·sd/√n"
    if all_pos or all_neg:
        return "inconclusive", "same sign in every seed but |mean| ≤ 2·sd/√n"
    return "inconclusive", "signs differ between seeds"


def fmt(x, digits=3):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def paired(runs, variant, reference, set_name, name):
    """Per-seed differences variant − reference on the seeds both have."""
    diffs = []
    for seed, (rep, _) in runs[variant].items():
        if seed not in runs[reference]:
            continue
        a = metric(dict(sets_of(rep))[set_name], name)
        b = metric(dict(sets_of(runs[reference][seed][0]))[set_name], name)
        if a is not None and b is not None:
            diffs.append(a - b)
    return diffs


def claims_for(single_label):
    """(claim, metric) pairs; C4 is handled on its own."""
    c3 = ["top1", "macro_f1"] if single_label else ["subset_accuracy", "macro_f1"]
    return [("C1 tail recall", "rare3_recall"), ("C2 head precision", "frequent3_precision")] + [
        ("C3 " + m, m) for m in c3
    ]


def main(folder):
    runs = load_runs(folder)
    if "bce" not in runs:
        sys.exit(f"{folder}: no bce runs to pair with")
    first = next(iter(runs["bce"].values()))[0]
    single_label = "top1" in first["summary"]
    set_names = [name for name, _ in sets_of(first)]
    metrics = (
        ["top1", "macro_f1", "map", "rare3_recall", "rare3_ap", "frequent3_precision"]
        if single_label
        else ["subset_accuracy", "macro_f1", "map", "rare3_recall", "rare3_ap", "frequent3_precision"]
    )
    out = []
    commits = sorted(
        {
            rep.get("provenance", {}).get("git_commit", "?")[:7]
            for seeds in runs.values()
            for rep, _ in seeds.values()
        }
    )
    out.append(f"# {folder}\n")
    out.append(f"Runs built from commit(s): {', '.join(commits)}.\n")
    for set_name in set_names:
        out.append(f"## Test set `{set_name}`\n")
        sample = dict(sets_of(first))[set_name]
        rare_rows = rarest(sample["per_class"])
        out.append(
            "Rarest classes (train positives → test positives): "
            + ", ".join(
                f"{r['name']} ({r['train_positives']} → {r['test_support']})" for r in rare_rows
            )
            + ".\n"
        )
        if any(r["test_support"] < 100 for r in rare_rows):
            out.append("**Warning: a rare class has fewer than 100 test positives here.**\n")
        out.append("| variant | seeds | " + " | ".join(metrics) + " |")
        out.append("|---|---:|" + "---:|" * len(metrics))
        for variant in runs:
            cells = []
            for name in metrics:
                xs = [metric(dict(sets_of(rep))[set_name], name) for rep, _ in runs[variant].values()]
                xs = [x for x in xs if x is not None]
                m, sd = mean_sd(xs) if xs else (None, None)
                cells.append(f"{fmt(m)} ± {fmt(sd)}")
            out.append(f"| {variant} | {len(runs[variant])} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("Paired differences against `bce` (per seed; mean ± sd; verdict):\n")
        out.append("| variant | claim | per-seed differences | mean ± sd | verdict |")
        out.append("|---|---|---|---:|---|")
        for variant in runs:
            if variant == "bce":
                continue
            for claim, name in claims_for(single_label) + [("(rare-3 AP)", "rare3_ap")]:
                d = paired(runs, variant, "bce", set_name, name)
                v, why = verdict(d)
                m, sd = mean_sd(d) if d else (None, None)
                out.append(
                    f"| {variant} | {claim} | {', '.join(f'{x:+.4f}' for x in d)} | "
                    f"{fmt(m, 4)} ± {fmt(sd, 4)} | {v} ({why}) |"
                )
            if variant.startswith("plm") and "focal" in runs and variant != "focal":
                d = paired(runs, variant, "focal", set_name, "macro_f1")
                v, why = verdict(d, at_least_as_good=True)
                m, sd = mean_sd(d) if d else (None, None)
                out.append(
                    f"| {variant} | C4 macro_f1 − focal's | {', '.join(f'{x:+.4f}' for x in d)} | "
                    f"{fmt(m, 4)} ± {fmt(sd, 4)} | {v} ({why}) |"
                )
        out.append("")
        # Secondary comparisons, named as such: masking against its
        # expectation, and PLM on top of focal loss against focal alone.
        pairs = [(a, b) for a, b in SECONDARY if a in runs and b in runs]
        if pairs:
            out.append("Secondary comparisons (not claims of the protocol; same rule, for reading):\n")
            out.append("| comparison | metric | per-seed differences | mean ± sd | reading |")
            out.append("|---|---|---|---:|---|")
            for a, b in pairs:
                for name in metrics:
                    d = paired(runs, a, b, set_name, name)
                    v, _ = verdict(d)
                    word = {"holds": "higher", "refuted": "lower"}.get(v, "no clear difference")
                    m, sd = mean_sd(d) if d else (None, None)
                    out.append(
                        f"| {a} − {b} | {name} | {', '.join(f'{x:+.4f}' for x in d)} | "
                        f"{fmt(m, 4)} ± {fmt(sd, 4)} | {word} |"
                    )
            out.append("")
        # Threshold shift: C1 holds but the rare-3 AP does not rise.
        for variant in runs:
            if variant == "bce":
                continue
            c1, _ = verdict(paired(runs, variant, "bce", set_name, "rare3_recall"))
            ap, _ = verdict(paired(runs, variant, "bce", set_name, "rare3_ap"))
            if c1 == "holds" and ap != "holds":
                out.append(
                    f"- `{variant}`: tail recall rises but the rare-3 AP does not "
                    f"({ap}): a threshold shift, not better learning."
                )
        out.append("")
    # Coverage of the rarest classes by PLM's masks (last epoch of each log).
    cover = []
    for variant, seeds in runs.items():
        for seed, (rep, log) in seeds.items():
            last = next((r["plm"] for r in reversed(log) if "plm" in r), None)
            if not last or "coverage_pos" not in last:
                continue
            rows = rarest(rep["per_class"])
            cells = ", ".join(
                f"{r['name']}: pos {last['coverage_pos'][r['class']]:.2f}, "
                f"neg {last['coverage_neg'][r['class']]:.2f}, r̂ {last['rhat'][r['class']]:.3g}"
                for r in rows
            )
            cover.append(f"| {variant} | {seed} | {cells} |")
    if cover:
        out.append("## PLM's coverage of the rarest classes\n")
        out.append(
            "Epochs' worth of each class's positives and negatives that the masks kept "
            "(the sum over epochs of the keep probabilities), and the final r̂.\n"
        )
        out.append("| variant | seed | rarest classes |")
        out.append("|---|---:|---|")
        out.extend(cover)
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
