#!/usr/bin/env python3
"""Merges bench/results/<component>.json files into latest.json and latest.md.

A component file is either a list of figure rows ({name, kaio, peer, ratio,
goal}, optionally unit, verdict ("met"/"missed") and load) or an object {"figures": [...], "tables": {name: {columns, rows}},
"plots": [file, ...]}. latest.json is that object form for everything. A row
without its own load gets its component's, from loads.tsv (bench/run.sh: the
1-minute load average before / after the component ran, and the share of CPU
time stolen by the hypervisor meanwhile).
"""
import json
import pathlib
import sys

results = pathlib.Path(sys.argv[1])
loads, steals = {}, {}
if (results / "loads.tsv").exists():
    for line in (results / "loads.tsv").read_text().splitlines():
        name, before, after, *steal = line.split("\t")
        loads[name] = [float(before), float(after)]
        if steal:
            steals[name] = float(steal[0])
figures, tables, plots = [], {}, []
for f in sorted(results.glob("*.json")):
    if f.name == "latest.json":
        continue
    data = json.loads(f.read_text())
    rows = data if isinstance(data, list) else data.get("figures", [])
    for r in rows:
        if r.get("load") is None and f.stem in loads:
            r["load"] = loads[f.stem]
        if r.get("steal") is None and f.stem in steals:
            r["steal"] = steals[f.stem]
    figures.extend(rows)
    if isinstance(data, dict):
        tables.update(data.get("tables", {}))
        plots.extend(data.get("plots", []))
(results / "latest.json").write_text(json.dumps({"figures": figures, "tables": tables, "plots": plots}, indent=2) + "\n")


def cell(v):
    return "" if v is None else str(v)


def goal(r):
    """The goal, and whether the run met it where the row says (decode rows)."""
    return cell(r.get("goal")) + (f": {r['verdict']}" if r.get("goal") and r.get("verdict") else "")


def load(r):
    """The 1-minute load average the row records: one value, or several (decode: before / after)."""
    v = r.get("load")
    return " / ".join(str(x) for x in v) if isinstance(v, list) else cell(v)


lines = ["| figure | kaio | peer | ratio | goal | load | steal |", "|---|---|---|---|---|---|---|"]
for r in figures:
    unit = f" {r['unit']}" if r.get("unit") and r.get("kaio") is not None else ""
    peer_unit = unit if r.get("peer") is not None else ""
    lines.append(f"| {r['name']} | {cell(r['kaio'])}{unit} | {cell(r['peer'])}{peer_unit} | {cell(r['ratio'])} "
                 f"| {goal(r)} | {load(r)} | {cell(r.get('steal'))} |")
for name, t in tables.items():
    lines += ["", f"**{name}**", "", "| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t["rows"]]
for p in plots:
    lines += ["", f"![{p}]({p})"]
(results / "latest.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
