"""Joins `ferrite bench --device cuda --json` with
`benches/pytorch_gpu_reference.py --json` on (bench, dtype, shape) and
prints one Markdown table: ferrite's rate, each PyTorch variant's rate,
and ferrite as a percentage of the fastest PyTorch variant.

Usage: python3 benches/compare_gpu.py ferrite.json torch.json [--json OUT]
(the PyTorch file may be missing or empty: ferrite's rows are printed alone).
"""

import argparse
import json
import sys


def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    return json.loads(text) if text.strip() else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ferrite")
    parser.add_argument("torch", nargs="?")
    parser.add_argument("--json", help="also write the joined rows here")
    args = parser.parse_args()
    ours = load(args.ferrite)
    if ours is None:
        sys.exit(f"compare_gpu: {args.ferrite} is missing or empty")
    theirs = load(args.torch) if args.torch else None
    by_key = {}
    for r in (theirs or {}).get("rows", []):
        by_key.setdefault((r["bench"], r["dtype"], r["shape"]), []).append(r)
    joined = []
    print(f"ferrite on {ours.get('device')}" +
          (f"; PyTorch {theirs.get('torch')} on {theirs.get('device')}" if theirs else
           "; no PyTorch reference"))
    print()
    print("| bench | dtype | shape | ferrite | % of reference | PyTorch | ferrite / best PyTorch |")
    print("|---|---|---|---:|---:|---|---:|")
    for r in ours.get("rows", []):
        key = (r["bench"], r["dtype"], r["shape"])
        refs = by_key.get(key, [])
        unit = r["unit"]
        pct = r.get("percent_of_reference")
        pct = "n/a" if pct is None else f"{pct:.0f} %"
        torch_cells = "; ".join(f"{t['impl']}: {t['rate']:.4g}" +
                                (f" ({t['peak_memory_mib']:.0f} MiB)"
                                 if t.get("peak_memory_mib") is not None else "")
                                for t in refs) or "n/a"
        best = max((t["rate"] for t in refs), default=None)
        ratio = "n/a" if not best else f"{100 * r['rate'] / best:.0f} %"
        mem = "" if r.get("peak_memory_mib") is None else f" ({r['peak_memory_mib']:.0f} MiB)"
        print(f"| {r['bench']} | {r['dtype']} | {r['shape']} | {r['rate']:.4g} {unit}{mem} | "
              f"{pct} | {torch_cells} | {ratio} |")
        joined.append({"key": list(key), "ferrite": r, "torch": refs})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(joined, f, indent=2)


if __name__ == "__main__":
    main()
