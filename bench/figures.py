"""What the Python benchmarks share: print each figure row as
`name: kaio X, peer Y, ratio Z` (with the machine load when the row has one)
and write the rows to bench/results/COMPONENT.json for bench/collect.py."""

import json
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def emit(component, rows, summary):
    for row in rows:
        load = " (load %s)" % (row["load"],) if row.get("load") is not None else ""
        print("%s: kaio %s, peer %s, ratio %s%s" % (row["name"], row["kaio"], row["peer"], row["ratio"], load))
    print(summary)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, component + ".json"), "w") as f:
        json.dump(rows, f, indent=2)
