"""Print each step's median over the median of its group's GEMM lower bound (the fastest GEMM
member when a group times several layouts of the same flops).

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
        base = min(gemm) if gemm else None
        for b in sorted(benches, key=lambda b: b["extra_info"].get("kind") != "gemm"):
            info = b["extra_info"]
            kind = info.get("kind")
            label = {"gemm": "GEMM " + "x".join(map(str, info.get("gemm_shape", []))),
                     "step": f"{info.get('estimator')} [{info.get('backend')}]"}.get(kind, b["name"])
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
    print(f"{'group':<24}{'':<32}{'median':>14}{'x GEMM':>9}")
    for group, label, med, ratio, flops in rows:
        if group != last:
            gflops = f"   (GEMM {flops / med / 1e9:.1f} GFLOP/s)" if label.startswith("GEMM") and flops else ""
            print(f"{group}{gflops}")
            last = group
        ratio_text = f"{ratio:9.2f}" if ratio is not None else f"{'-':>9}"
        print(f"{'':<24}{label:<32}{med * 1e6:12.1f}us{ratio_text}")


if __name__ == "__main__":
    main()
