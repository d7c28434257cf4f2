"""Joins `ferrite bench --conv-layers --json` with
`benches/pytorch_reference.py --conv-layers --json` on (shape, pass) and
prints one Markdown ratio table.

Several files of each side may be given (interleaved runs): a row's time is
then the median of the runs' medians, and the range is the lowest and
highest run median. A closing table sums each model's convolution time per
pass, every layer counted as often as the model uses it.

Usage: python3 benches/compare_conv.py --ferrite f1.json [f2.json ...]
                                       --torch t1.json [t2.json ...]
                                       [--before b1.json ...]

With --before (runs of an earlier ferrite build), a column shows that
build's time next to the current one.
"""

import argparse
import json
import statistics


def load_rows(paths):
    """{(shape, pass): [row, ...]} over the files, and the first file's header."""
    by_key, head = {}, None
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        head = head or doc
        for r in doc["rows"]:
            by_key.setdefault((r["shape"], r["pass"]), []).append(r)
    return by_key, head


def summary(rows):
    meds = [r["median_ms"] for r in rows]
    return statistics.median(meds), min(meds), max(meds)


def cell(s):
    med, lo, hi = s
    return f"{med:.3f} ({lo:.3f}–{hi:.3f})" if lo != hi else f"{med:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ferrite", nargs="+", required=True)
    parser.add_argument("--torch", nargs="+", required=True)
    parser.add_argument("--before", nargs="+", help="runs of an earlier ferrite build")
    args = parser.parse_args()
    before = load_rows(args.before)[0] if args.before else None
    ours, oh = load_rows(args.ferrite)
    theirs, th = load_rows(args.torch)
    peak = oh.get("peak_gflops")
    print(f"ferrite: {len(args.ferrite)} run(s), {oh['threads']} threads, FMA peak "
          f"{peak:.0f} GFLOP/s; {th['impl']}: {len(args.torch)} run(s), {th['threads']} "
          f"threads, {th.get('cpu_capability', '')}; batch {oh['batch']}")
    print()
    was = "ferrite before ms (range) | " if before else ""
    print(f"| layer | pass | {was}ferrite ms (range) | GFLOP/s | % of peak | algorithm | "
          "PyTorch ms (range) | ferrite / PyTorch |")
    print("|---|---|" + ("---:|" if before else "") + "---:|---:|---:|---|---:|---:|")
    totals = {}
    slower = 0
    for key, rows in ours.items():
        f = summary(rows)
        t = summary(theirs[key]) if key in theirs else None
        flops = rows[0]["gflops"] * rows[0]["median_ms"] * 1e6
        rate = flops / f[0] / 1e6
        ratio = f"{f[0] / t[0]:.2f}" if t else "n/a"
        if t and f[0] > t[0]:
            ratio = f"**{ratio}**"
            slower += 1
        b = summary(before[key]) if before and key in before else None
        was = (cell(b) if b else "n/a") + " | " if before else ""
        print(f"| {key[0]} | {key[1]} | {was}{cell(f)} | {rate:.0f} | {100 * rate / peak:.0f} % | "
              f"{rows[0]['algorithm']} | {cell(t) if t else 'n/a'} | {ratio} |")
        for m in rows[0]["models"].split():
            name, count = m.split("\u00d7")
            tot = totals.setdefault((name, key[1]), [0.0, 0.0, 0.0])
            tot[0] += int(count) * f[0]
            tot[1] += int(count) * (t[0] if t else float("nan"))
            tot[2] += int(count) * (b[0] if b else float("nan"))
    print()
    print(f"{slower} of {len(ours)} rows slower than PyTorch (ratio in bold).")
    print()
    was = "ferrite before ms | " if before else ""
    print(f"| model | pass | {was}ferrite ms (sum of layers) | PyTorch ms | ferrite / PyTorch |")
    print("|---|---|" + ("---:|" if before else "") + "---:|---:|---:|")
    for (name, p), (a, t, b) in sorted(totals.items()):
        was = f"{b:.1f} | " if before else ""
        print(f"| {name} | {p} | {was}{a:.1f} | {t:.1f} | {a / t:.2f} |")


if __name__ == "__main__":
    main()
