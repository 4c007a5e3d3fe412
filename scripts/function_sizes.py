#!/usr/bin/env python3
"""Longest C functions and largest files of a tree (issue 16's before/after table).

A function is a top-level definition: a line at column 0 that is not a
preprocessor line, comment or declaration, followed (on that line or a later
one) by a '{' at column 0; its length is the lines from that first line to the
matching '}' at column 0, both included. Files are counted in lines.

usage: function_sizes.py [--top N] [--over L] DIR...
"""
import os
import re
import sys

def functions(path):
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
    out, start, name = [], None, None
    for i, line in enumerate(lines):
        if start is None:
            m = re.match(r"^[A-Za-z_][\w \*]*?\b(\w+)\s*\(", line)
            one_line = line.rstrip().endswith("}")  # static int f(char c) { return ...; }
            if m and not one_line and not line.rstrip().endswith(";") and not line.startswith(("typedef", "struct", "enum", "#")):
                # the body opens with '{' alone at column 0 within a few lines
                for j in range(i, min(i + 8, len(lines))):
                    if lines[j].startswith("{"):
                        start, name = i, m.group(1)
                        break
                    if lines[j].rstrip().endswith(";"):
                        break
        elif line.startswith("}"):
            out.append((i - start + 1, name, path))
            start = None
    return out

def main(argv):
    top, over, dirs = 15, 0, []
    it = iter(argv)
    for a in it:
        if a == "--top":
            top = int(next(it))
        elif a == "--over":
            over = int(next(it))
        else:
            dirs.append(a)
    funcs, files = [], []
    for d in dirs:
        for root, _, names in os.walk(d):
            for n in names:
                if n.endswith((".c", ".h")):
                    p = os.path.join(root, n)
                    funcs += functions(p)
                    with open(p, encoding="utf-8", errors="replace") as f:
                        files.append((sum(1 for _ in f), p))
    funcs.sort(reverse=True)
    files.sort(reverse=True)
    if over:
        for n, name, p in funcs:
            if n > over:
                print(f"{n:5d}  {name}  {p}")
        return
    print("longest functions:")
    for n, name, p in funcs[:top]:
        print(f"{n:5d}  {name}  {p}")
    print("largest files:")
    for n, p in files[:top]:
        print(f"{n:5d}  {p}")
    print(f"functions over 80 lines: {sum(1 for f in funcs if f[0] > 80)}; "
          f"files: {len(files)}, lines: {sum(n for n, _ in files)}")

main(sys.argv[1:])
