"""Replaces (or appends) one `## ` section of BENCHMARKS.md. Used by the bench scripts so
that each rewrites only its own section. Usage: python3 bench/write_section.py < SECTION.md
(the section's first line is its `## ` heading)."""
import os
import sys

section = sys.stdin.read().rstrip("\n") + "\n"
heading = section.splitlines()[0]
path = os.path.join(os.path.dirname(__file__), "..", "BENCHMARKS.md")
header = (
    "# fedra benchmarks\n\nEvery number here comes from a command in this repository, measured side by side in one run. "
    "These machines are noisy: compare ratios within a table, not across tables.\n"
)
text = open(path).read() if os.path.exists(path) else header
start = text.find(heading)
if start >= 0:
    end = text.find("\n## ", start + 1)
    rest = text[end + 1 :] if end >= 0 else ""
    # Keep hand-written notes that follow a generated table: they start with "Reading:".
    old = text[start : end + 1 if end >= 0 else len(text)]
    notes = old[old.find("\nReading:") + 1 :] if "\nReading:" in old else ""
    text = text[:start] + section + ("\n" + notes.rstrip("\n") + "\n" if notes else "") + ("\n" + rest.lstrip("\n") if rest else "")
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
print(section)
