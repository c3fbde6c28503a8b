#!/usr/bin/env python3
"""Merges bench/results/<component>.json files into latest.json and latest.md."""
import json
import pathlib
import sys

results = pathlib.Path(sys.argv[1])
rows = []
for f in sorted(results.glob("*.json")):
    if f.name == "latest.json":
        continue
    rows.extend(json.loads(f.read_text()))
(results / "latest.json").write_text(json.dumps(rows, indent=2) + "\n")
lines = ["| figure | kaio | peer | ratio | goal |", "|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['name']} | {r['kaio']} | {r['peer']} | {r['ratio']} | {r.get('goal', '')} |")
(results / "latest.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
