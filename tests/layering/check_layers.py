#!/usr/bin/env python3
"""The house's rule (issue 10): data flows one way, and no source includes a header of a layer
above its own. Layers, lowest first; folders of one rank are siblings and include none of each
other. Usage: check_layers.py SOURCE_DIR. Exits 1 naming every include that breaks the rule."""
import pathlib
import re
import sys

RANK = {  # folder -> layer; a folder not listed here is not checked
    "keystore": 0,
    "agent/base": 1,
    "agent/config": 2, "agent/protocol": 2,
    "agent/intake": 3, "agent/mqtt": 3, "agent/audit": 3,
    "agent/dispatch": 4, "agent/metrics": 4,
    "agent": 5,
    "agent/cli": 6,
}

def folder_of(relative: str) -> str:
    parts = relative.split("/")
    if parts[0] == "keystore":
        return "keystore"
    if parts[0] == "agent":
        return "agent" if len(parts) == 2 else "agent/" + parts[1]
    return ""

def main() -> int:
    root = pathlib.Path(sys.argv[1])
    broken = []
    for path in sorted(list(root.glob("agent/**/*.[ch]pp")) + list(root.glob("keystore/*.[ch]pp"))):
        relative = path.relative_to(root).as_posix()
        own = folder_of(relative)
        if own not in RANK:
            continue
        for line_number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r'\s*#include "([^"]+)"', line)
            if not match:
                continue
            included = match.group(1)
            if "/" not in included:
                target = own if (path.parent / included).exists() else "agent"
            else:
                head = included.split("/")[0]
                target = "keystore" if head == "keystore" else "agent/" + head
            if target not in RANK or target == own:
                continue
            if RANK[target] >= RANK[own]:
                broken.append(f"{relative}:{line_number}: {own} (layer {RANK[own]}) includes "
                              f"{included} of {target} (layer {RANK[target]})")
    for line in broken:
        print(line)
    print(f"layering: {len(broken)} include(s) against the flow")
    return 1 if broken else 0

if __name__ == "__main__":
    sys.exit(main())
