"""Print each step's median over the median of its group's GEMM lower bound.

Usage: ``python bench/ratios.py kernels.json`` with the JSON written by
``python -m pytest bench/test_kernels.py --benchmark-only --benchmark-json=kernels.json``.
"""
import json
import sys


def ratio_rows(data):
    """[(group, label, median seconds, median / GEMM median or None)] in the file's group order."""
    groups = {}
    for bench in data["benchmarks"]:
        groups.setdefault(bench["group"], []).append(bench)
    rows = []
    for group, benches in groups.items():
        gemm = [b["stats"]["median"] for b in benches if b["extra_info"].get("kind") == "gemm"]
        base = gemm[0] if gemm else None
        for b in sorted(benches, key=lambda b: b["extra_info"].get("kind") != "gemm"):
            info = b["extra_info"]
            kind = info.get("kind")
            label = {"gemm": "GEMM", "step": f"{info.get('estimator')} [{info.get('backend')}]"}.get(kind, b["name"])
            med = b["stats"]["median"]
            rows.append((group, label, med, med / base if base else None, info.get("flops")))
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python bench/ratios.py <pytest-benchmark json>")
    with open(argv[0]) as fh:
        rows = ratio_rows(json.load(fh))
    last = None
    print(f"{'group':<24}{'':<24}{'median':>12}{'x GEMM':>9}")
    for group, label, med, ratio, flops in rows:
        if group != last:
            gflops = f"   (GEMM {flops / med / 1e9:.1f} GFLOP/s)" if label == "GEMM" and flops else ""
            print(f"{group}{gflops}")
            last = group
        ratio_text = f"{ratio:9.2f}" if ratio is not None else f"{'-':>9}"
        print(f"{'':<24}{label:<24}{med * 1e6:10.1f}us{ratio_text}")


if __name__ == "__main__":
    main()
