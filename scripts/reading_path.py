#!/usr/bin/env python3
"""Counts the reading path: the files and functions that ARCHITECTURE.md's "Reading order"
table names, and the lines of code in those functions' bodies (neither blank nor comments).

usage: scripts/reading_path.py [--functions]   (--functions: one line per function too)

Each row of the table names a file (`src/...rs`) and the functions to read there (`fn` or
`Type::method`, or a type, whose `impl` blocks count whole). A name the file does not define
is an error: the table and the code must agree."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def table_rows():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Reading order", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[1].startswith("`src/"):
            continue
        yield cells[1].strip("`"), re.findall(r"`([A-Za-z_][A-Za-z0-9_:]*)`", cells[2])


def code_lines(lines):
    return sum(1 for l in lines if l.strip() and not l.strip().startswith("//"))


def block(lines, start):
    """The lines from `start` to the line that closes the first `{` at or after it."""
    depth, opened = 0, False
    for i in range(start, len(lines)):
        code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[i].split("//")[0])
        code = re.sub(r"'(\\.|[^'\\])'", "''", code)
        depth += code.count("{") - code.count("}")
        opened = opened or "{" in code
        if opened and depth <= 0:
            return lines[start + 1:i]
    raise ValueError(f"unbalanced braces from line {start + 1}")


def body(path, name):
    lines = (ROOT / path).read_text().split("\n")
    typ, _, fn = name.rpartition("::")
    found = []
    if not typ and re.match(r"[A-Z]", name):
        # A type: its struct and every impl block of it count.
        pattern = re.compile(rf"^\s*(pub(\([a-z]+\))? )?(struct|enum) {name}\b|^impl(<[^>]*>)? ([A-Za-z:]+ for )?{name}\b")
        for i, l in enumerate(lines):
            if pattern.search(l):
                found.append(block(lines, i))
    else:
        impl_of = None
        for i, l in enumerate(lines):
            m = re.match(r"^impl(<[^>]*>)? (?:[A-Za-z:<>']+ for )?([A-Za-z_]+)", l)
            if m:
                impl_of = m.group(2)
            elif re.match(r"^\S", l):
                impl_of = None if not l.startswith("}") else impl_of
            if re.search(rf"\bfn {fn}\b", l) and (not typ or impl_of == typ):
                found.append(block(lines, i))
    if not found:
        raise SystemExit(f"{path}: no `{name}` there (ARCHITECTURE.md's reading order)")
    return sum(code_lines(b) for b in found)


def main():
    per_file = []
    for path, names in table_rows():
        counts = [(n, body(path, n)) for n in names]
        per_file.append((path, counts))
    total = 0
    for path, counts in per_file:
        n = sum(c for _, c in counts)
        total += n
        print(f"{n:5d} {path}")
        if "--functions" in sys.argv:
            for name, c in counts:
                print(f"{c:11d} {name}")
    print(f"{total:5d} lines of function bodies in {len(per_file)} files")


if __name__ == "__main__":
    main()
