#!/usr/bin/env python3
"""Paired per-seed differences of one metric between the result rows of two profiles.

    python3 scripts/paired.py results/quick-bf16 results/quick tofa maxnet_acc minnet_acc \
        --where dataset=synth-cifar10 variant=full

Rows of table TABLE in `A/tables.json` and `B/tables.json` that match every `--where KEY=VALUE`
(and come from a stage whose id starts with `--stage`, e.g. `baseline/`) are paired on their key fields (data set, variant, seed, ...: everything but the metrics);
for each METRIC it prints A's and B's means and `A - B` as mean ± sample standard deviation
over the pairs, the unit the Claims section uses. A row without its partner is an error.
"""
import argparse
import json
import pathlib
import statistics
import sys


def rows(results_dir, table, where, stage):
    tables = json.loads((pathlib.Path(results_dir) / "tables.json").read_text())
    try:
        raw = tables["tables"][table]
    except KeyError:
        sys.exit(f"error: {results_dir}/tables.json has no table `{table}`")
    out = {}
    for r in raw:
        keys = {k: str(v) for k, v in r["keys"].items()}
        if r["stage"].startswith(stage) and all(keys.get(k) == v for k, v in where.items()):
            out[tuple(sorted(keys.items()))] = r["metrics"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("table")
    p.add_argument("metrics", nargs="+")
    p.add_argument("--where", nargs="*", default=[], help="KEY=VALUE filters on the key fields")
    p.add_argument("--stage", default="", help="only rows of stages whose id starts with this")
    a = p.parse_args()
    where = dict(w.split("=", 1) for w in a.where)
    ra, rb = rows(a.a, a.table, where, a.stage), rows(a.b, a.table, where, a.stage)
    if not ra or set(ra) != set(rb):
        sys.exit(f"error: the rows do not pair up: {len(ra)} in A, {len(rb)} in B, "
                 f"unpaired {sorted(set(ra) ^ set(rb))}")
    print(f"{len(ra)} pairs of `{a.table}` rows ({', '.join(f'{k}={v}' for k, v in where.items()) or 'all'})")
    for m in a.metrics:
        pa = [ra[k][m] for k in sorted(ra)]
        pb = [rb[k][m] for k in sorted(ra)]
        d = [x - y for x, y in zip(pa, pb)]
        sd = statistics.stdev(d) if len(d) > 1 else 0.0
        print(f"{m}: A {statistics.mean(pa):.2f}, B {statistics.mean(pb):.2f}, "
              f"A - B {statistics.mean(d):+.2f} ± {sd:.2f}")


if __name__ == "__main__":
    main()
