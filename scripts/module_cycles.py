#!/usr/bin/env python3
"""Module-level import cycles in one Rust crate.

Usage: module_cycles.py <crate>/src [--edges]

Each file is a module (lib.rs the root, x.rs or x/mod.rs `x`, x/y.rs `x::y`).
An edge A -> B is any path in A's code (comments and strings stripped; `use`
trees expanded) that names something in module B: `crate::b::…`, `super::…`,
`self::…`, or a bare `child::…` naming one of A's own submodules. Paths through
the crate root's `pub use` re-exports (`crate::Config`) are followed to the
module they come from; `mod x;` declarations are not edges. Inline modules
(`mod tests { … }`) count as part of their file, with `super::` resolved from
where they stand. Reports each strongly connected component of more than one
module, one shortest cycle through each edge's evidence, and exits 1 if any.
"""
import os
import re
import sys
from collections import defaultdict, deque


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel == ["lib"] or rel == ["main"]:
        return ()
    if rel[-1] == "mod":
        rel = rel[:-1]
    return tuple(rel)


def strip(text):
    """Blanks comments, string and char literals (keeps newlines and offsets)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'b?r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # a char literal, not a lifetime
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", tree)
    tree = re.sub(r"\bas\w+", "", tree)

    def split_top(s):
        parts, depth, start = [], 0, 0
        for k, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        parts.append(s[start:])
        return [p for p in parts if p]

    def walk(s):
        k = s.find("{")
        if k < 0:
            return [s]
        prefix, inner = s[:k], s[k + 1:s.rfind("}")]
        return [prefix + x for part in split_top(inner) for x in walk(part)]

    return walk(tree)


def main():
    src = sys.argv[1]
    show_edges = "--edges" in sys.argv
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_of(src, path)] = path
    modules = set(files)
    # declared children, for bare paths
    children = defaultdict(set)
    for m in modules:
        if m:
            children[m[:-1]].add(m[-1])

    texts = {m: strip(open(p, encoding="utf-8").read()) for m, p in files.items()}
    # `pub(in path)` names where an item may be seen, not something it uses.
    texts = {m: re.sub(r"pub\s*\(\s*in\s+[\w:]+\s*\)", "pub", t) for m, t in texts.items()}

    # re-exports at the root: name -> absolute path
    root_reexports = {}
    for path in (expand_use(t) for t in re.findall(r"\bpub\s+use\s+([^;]+);", texts.get((), ""))):
        for p in path:
            segs = p.split("::")
            if segs[0] == "crate":
                segs = segs[1:]
            root_reexports[segs[-1]] = segs

    def resolve(segs):
        """The longest known module prefix of an absolute path (tuple of segments)."""
        segs = list(segs)
        if segs and segs[0] in root_reexports and (segs[0],) not in modules:
            segs = root_reexports[segs[0]] + segs[1:]
        best = ()
        for k in range(1, len(segs) + 1):
            if tuple(segs[:k]) in modules:
                best = tuple(segs[:k])
        return best

    edges = defaultdict(lambda: defaultdict(list))  # a -> b -> [evidence]

    path_re = re.compile(r"(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::(?:\w+|\*))+)")
    for m, text in texts.items():
        # inline modules: (start offset, end offset, name)
        inline = []
        for mm in re.finditer(r"\bmod\s+(\w+)\s*\{", text):
            depth, j = 1, mm.end()
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            inline.append((mm.start(), j, mm.group(1)))

        def here(offset):
            return m + tuple(name for s, e, name in inline if s <= offset < e)

        found = []
        for um in re.finditer(r"\buse\s+([^;]+);", text):
            for p in expand_use(um.group(1)):
                found.append((um.start(), p))
        use_spans = [(um.start(), um.end()) for um in re.finditer(r"\buse\s+([^;]+);", text)]
        for pm in path_re.finditer(text):
            if any(s <= pm.start() < e for s, e in use_spans):
                continue
            found.append((pm.start(), pm.group(1)))

        for offset, p in found:
            segs = [s for s in p.split("::") if s]
            cur = here(offset)
            if segs[0] == "crate":
                absolute = segs[1:]
            elif segs[0] in ("super", "self"):
                base = list(cur)
                while segs and segs[0] in ("super", "self"):
                    if segs[0] == "super":
                        base = base[:-1]
                    segs = segs[1:]
                absolute = base + segs
            elif segs[0] in children[cur]:
                absolute = list(cur) + segs
            else:
                continue  # an external crate, a type, an imported name
            target = resolve(absolute)
            # inline modules map to their file
            target = max((t for t in modules if target[:len(t)] == t), key=len, default=())
            if target == m or target == ():
                continue
            line = text.count("\n", 0, offset) + 1
            edges[m][target].append(f"{os.path.relpath(files[m], src)}:{line}: {p}")

    name = lambda m: "::".join(m) or "crate"

    # The top level: each of the crate's modules with everything under it, as
    # `crate::api::admission` is reached through `api`.
    top = defaultdict(lambda: defaultdict(list))
    for a in edges:
        for b, evidence in edges[a].items():
            if a[:1] != b[:1] and a and b:
                top[a[:1]][b[:1]].extend(evidence)

    if show_edges:
        for a in sorted(edges):
            print(f"{name(a)} -> {', '.join(name(b) for b in sorted(edges[a]))}")
        print()

    total = 0
    for label, graph, nodes in (
        ("top-level modules (each with its submodules)", top, {m[:1] for m in modules if m}),
        ("files", edges, modules),
    ):
        cycles = cycles_of(graph, nodes)
        total += len(cycles)
        count = sum(len(graph[a]) for a in nodes)
        print(f"{label}: {len(nodes)} modules, {count} edges, {len(cycles)} cycle(s)")
        for comp in cycles:
            print(f"  cycle among {len(comp)}: {', '.join(name(c) for c in comp)}")
            for ring in shortest_rings(graph, comp):
                print("    " + " -> ".join(name(x) for x in ring))
                for a, b in zip(ring, ring[1:]):
                    print(f"        {name(a)} -> {name(b)}: {graph[a][b][0]}")
        print()
    sys.exit(1 if total else 0)


def cycles_of(graph, nodes):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return sorted(c for c in sccs if len(c) > 1)


def shortest_rings(graph, comp):
    """A shortest cycle through each member, without repeats."""
    members, seen = set(comp), set()
    for start in comp:
        prev, q, back = {start: None}, deque([start]), None
        while q and back is None:
            v = q.popleft()
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    back = v
                    break
                if w not in prev:
                    prev[w] = v
                    q.append(w)
        path = [back]
        while prev[path[-1]] is not None:
            path.append(prev[path[-1]])
        path.reverse()
        if frozenset(path) in seen:
            continue
        seen.add(frozenset(path))
        yield path + [start]


if __name__ == "__main__":
    main()
