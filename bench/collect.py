#!/usr/bin/env python3
"""Merges bench/results/<component>.json files into latest.json and latest.md.

A component file is either a list of figure rows ({name, kaio, peer, ratio,
goal}) or an object {"figures": [...], "tables": {name: {columns, rows}},
"plots": [file, ...]}. latest.json is that object form for everything.
"""
import json
import pathlib
import sys

results = pathlib.Path(sys.argv[1])
figures, tables, plots = [], {}, []
for f in sorted(results.glob("*.json")):
    if f.name == "latest.json":
        continue
    data = json.loads(f.read_text())
    if isinstance(data, list):
        figures.extend(data)
    else:
        figures.extend(data.get("figures", []))
        tables.update(data.get("tables", {}))
        plots.extend(data.get("plots", []))
(results / "latest.json").write_text(json.dumps({"figures": figures, "tables": tables, "plots": plots}, indent=2) + "\n")


def cell(v):
    return "" if v is None else str(v)


lines = ["| figure | kaio | peer | ratio | goal |", "|---|---|---|---|---|"]
for r in figures:
    unit = f" {r['unit']}" if r.get("unit") and r.get("kaio") is not None else ""
    peer_unit = unit if r.get("peer") is not None else ""
    lines.append(f"| {r['name']} | {cell(r['kaio'])}{unit} | {cell(r['peer'])}{peer_unit} | {cell(r['ratio'])} "
                 f"| {cell(r.get('goal'))} |")
for name, t in tables.items():
    lines += ["", f"**{name}**", "", "| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t["rows"]]
for p in plots:
    lines += ["", f"![{p}]({p})"]
(results / "latest.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
