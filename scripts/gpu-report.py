#!/usr/bin/env python3
"""The JSON and summaries of scripts/gpu-validate.sh (standard library only).

    gpu-report.py env MANIFEST      machine facts as JSON (stdout)
    gpu-report.py tests OUT_DIR     per-executable test results as JSON (stdout)
    gpu-report.py train CPU_RUN DEVICE_RUN
                                    compares two `ferrite train` runs of the same
                                    configuration as JSON (stdout); exit status 1
                                    when they disagree beyond the tolerances
    gpu-report.py summary OUT_DIR   writes OUT_DIR/summary.json and summary.md
                                    from what the stages left, prints the .md
"""

# Tolerances of the training comparison: the device sums in another order,
# so losses drift apart slowly over the steps; metrics are thresholded
# counts and move in steps of 1/test_size.
TRAIN_LOSS_RTOL = 1e-2
MAP_ATOL = 0.02

import json
import os
import re
import shutil
import subprocess
import sys


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def version_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", v or ""))


def env(manifest_path):
    manifest = json.load(open(manifest_path))
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else ""
    glibc = (glibc or "").replace("glibc ", "")
    required = (manifest.get("glibc_required") or "").replace("GLIBC_", "")
    smi = run(["nvidia-smi"]) if shutil.which("nvidia-smi") else ""
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", smi)
    gpus = []
    if shutil.which("nvidia-smi"):
        q = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                 "--format=csv,noheader"])
        for line in q.strip().splitlines():
            name, driver, memory, cc = [x.strip() for x in line.split(",")]
            gpus.append({"name": name, "driver": driver, "memory": memory, "compute_cap": cc})
    import importlib.util
    return {
        "glibc": glibc,
        "glibc_required": required,
        "glibc_ok": not required or version_tuple(glibc) >= version_tuple(required),
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "gpus": gpus,
        "cuda_driver_version": cuda.group(1) if cuda else None,
        "nvrtc_dir": os.environ.get("NVRTC_LIB") or None,
        "python": sys.version.split()[0],
        "torch_installed": importlib.util.find_spec("torch") is not None,
        "tools": {t: shutil.which(t) for t in
                  ["nvidia-smi", "nvcc", "ncu", "compute-sanitizer", "cuobjdump"]},
        "rehearsal": os.environ.get("REHEARSE") == "1",
        "build": {k: manifest.get(k) for k in ["commit", "dirty", "features", "cubin_bundle"]},
    }


def tests(out):
    results = []
    listing = os.path.join(out, "tests.txt")
    for line in open(listing).read().splitlines() if os.path.exists(listing) else []:
        parts = line.split()
        name, rc = parts[0], parts[-1]
        log_path = os.path.join(out, f"test_{name}.log")
        log = open(log_path, errors="replace").read() if os.path.exists(log_path) else ""
        counts = re.search(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", log)
        device = re.search(r"device suite(?: on| :)? ?(.*)", log)
        results.append({
            "executable": name,
            "exit_status": int(rc) if rc.lstrip("-").isdigit() else None,
            "passed": int(counts.group(1)) if counts else None,
            "failed": int(counts.group(2)) if counts else None,
            "ignored": int(counts.group(3)) if counts else None,
            "failures": re.findall(r"^test (\S+) \.\.\. FAILED", log, re.M),
            "device": device.group(0).strip() if device else None,
        })
    return {"scale": os.environ.get("FERRITE_DEVICE_TEST_SCALE"), "executables": results}


def train(cpu_dir, dev_dir):
    def epochs(d):
        return [json.loads(line) for line in open(os.path.join(d, "log.jsonl")) if line.strip()]
    config = json.load(open(os.path.join(cpu_dir, "config.json")))
    cpu, dev = epochs(cpu_dir), epochs(dev_dir)
    rows, ok = [], len(cpu) == len(dev) and len(cpu) > 0
    for c, d in zip(cpu, dev):
        loss_rel = abs(c["train_loss"] - d["train_loss"]) / max(abs(c["train_loss"]), 1e-12)
        map_abs = abs(c["test"]["map"] - d["test"]["map"])
        ok = ok and loss_rel <= TRAIN_LOSS_RTOL and map_abs <= MAP_ATOL
        rows.append({"epoch": c["epoch"], "train_loss": [c["train_loss"], d["train_loss"]],
                     "train_loss_rel_diff": loss_rel, "test_map": [c["test"]["map"], d["test"]["map"]],
                     "test_map_abs_diff": map_abs,
                     "images_per_sec": [c.get("images_per_sec"), d.get("images_per_sec")]})
    report = json.load(open(os.path.join(cpu_dir, "report.json")))
    batch = config.get("batch_size") or config.get("train", {}).get("batch_size")
    steps = None
    if batch:
        steps = len(cpu) * -(-report["train_size"] // batch)
    worst = max((r["train_loss_rel_diff"] for r in rows), default=float("nan"))
    verdict = (f"{'agree' if ok else 'DISAGREE'}: {len(rows)} epochs, {steps} steps; largest "
               f"train-loss difference {worst:.2e} (tolerance {TRAIN_LOSS_RTOL}), test mAP within "
               f"{MAP_ATOL}" + ("" if ok else " FAILED"))
    return {"passed": ok, "verdict": verdict, "steps": steps, "epochs": rows,
            "title": report.get("title")}


def load(out, name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return None


def summary(out):
    stages = []
    path = os.path.join(out, "stages.jsonl")
    if os.path.exists(path):
        stages = [json.loads(line) for line in open(path) if line.strip()]
    env_json = load(out, "env.json")
    kernels = load(out, "kernels.json")
    bundle = load(out, "kernels_bundle.json")
    test_json = load(out, "tests.json")
    train = load(out, "train_compare.json")
    md = ["# ferrite GPU validation", ""]
    if env_json:
        gpu = ", ".join(f"{g['name']} (driver {g['driver']}, cc {g['compute_cap']})"
                        for g in env_json["gpus"]) or "no nvidia-smi"
        md += [f"- machine: {gpu}; CUDA driver API {env_json['cuda_driver_version']}; "
               f"glibc {env_json['glibc']} (executables need {env_json['glibc_required']}); "
               f"NVRTC from {env_json['nvrtc_dir']}",
               f"- build: {env_json['build']['features']} at {env_json['build']['commit']}"
               f"{' (uncommitted changes)' if env_json['build']['dirty'] else ''}; "
               f"rehearsal: {env_json['rehearsal']}"]
    md += ["", "| stage | status | seconds | note |", "|---|---|---:|---|"]
    for s in stages:
        md.append(f"| {s['stage']} | {s['status']} | {s['seconds']:.1f} | {s['note']} |")
    if kernels:
        formats = sorted({f"{m['format'] or 'C++'} ({m['origin']})" for m in kernels["modules"]})
        md += ["", f"kernels: {len(kernels['kernels'])} in {len(kernels['modules'])} families on "
               f"{kernels['device']} ({kernels['arch']}), loaded as {', '.join(formats)}; "
               f"launch limits {'passed' if kernels['passed'] else 'FAILED'}"]
        for k in kernels["kernels"]:
            for p in k["problems"]:
                md.append(f"- FAIL {k['entry']}: {p}")
        md += [f"- ERROR {e}" for e in kernels["errors"]]
    if bundle:
        md.append(f"CUBIN bundle: launch limits {'passed' if bundle['passed'] else 'FAILED'}")
    if test_json:
        md += ["", f"tests (FERRITE_DEVICE_TEST_SCALE={test_json['scale']}):"]
        for t in test_json["executables"]:
            md.append(f"- {t['executable']}: {t['passed']} passed, {t['failed']} failed"
                      f"{' ' + str(t['failures']) if t['failures'] else ''}"
                      f" (exit {t['exit_status']})")
    if train:
        md += ["", "training, device vs CPU: " + train.get("verdict", "")]
    compare = os.path.join(out, "bench_compare.md")
    if os.path.exists(compare):
        md += ["", "## benchmarks", "", open(compare).read().rstrip()]
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"stages": stages, "env": env_json, "kernels_passed": kernels and kernels["passed"],
                   "bundle_passed": bundle and bundle["passed"], "tests": test_json,
                   "train": train}, f, indent=2)
    return text


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "train":
        result = train(sys.argv[2], sys.argv[3])
        print(json.dumps(result, indent=2))
        sys.exit(0 if result["passed"] else 1)
    if len(sys.argv) != 3 or sys.argv[1] not in ("env", "tests", "summary"):
        sys.exit(__doc__)
    what, arg = sys.argv[1:]
    if what == "env":
        print(json.dumps(env(arg), indent=2))
    elif what == "tests":
        print(json.dumps(tests(arg), indent=2))
    else:
        print(summary(arg), end="")


if __name__ == "__main__":
    main()
