#!/usr/bin/env python3
"""Fails when the top-level modules of a crate depend on each other in a cycle.

For each crate under agent/, every `crate::<module>` path in a module's files (comments and
`#[cfg(test)]` tails excluded) is an edge from that module to <module>. Prints the edges with
--edges; exits 1 and names the cycle if there is one. Crates cannot form cycles (Cargo refuses).
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
crates = sorted(p.parent for p in (root / "agent").glob("*/Cargo.toml"))
path_re = re.compile(r"\bcrate::(?:\{([^}]*)\}|([a-z_][a-z0-9_]*))")


def module_of(src: pathlib.Path, f: pathlib.Path) -> str | None:
    rel = f.relative_to(src)
    if rel.parts[0] in ("lib.rs", "main.rs"):
        return None
    return rel.parts[0].removesuffix(".rs")


def code(text: str) -> str:
    # unit tests may reach anywhere; they are not part of the layering
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def edges(src: pathlib.Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for f in sorted(src.rglob("*.rs")):
        m = module_of(src, f)
        if m is None or m.endswith("_tests"):
            continue
        deps = graph.setdefault(m, set())
        for group, single in path_re.findall(code(f.read_text())):
            names = [single] if single else [n.strip().split("::")[0] for n in group.split(",")]
            deps.update(n for n in names if n and n != m and n != "self")
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


failed = False
for crate in crates:
    graph = edges(crate / "src")
    if "--edges" in sys.argv:
        for m in sorted(graph):
            print(f"{crate.name}: {m} -> {', '.join(sorted(graph[m])) or '-'}")
    found = cycle(graph)
    if found:
        print(f"{crate.name}: dependency cycle between modules: {' -> '.join(found)}")
        failed = True
    else:
        print(f"{crate.name}: {len(graph)} modules, no cycle")
sys.exit(1 if failed else 0)
