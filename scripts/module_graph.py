#!/usr/bin/env python3
"""The module import graph of src/, checked against the layers ARCHITECTURE.md describes.

Prints every import between top-level modules, any import cycle (between files, and between
top-level modules), and every import that points from a lower layer to a higher one. With
--check, exits 1 when there is a cycle or an upward import that ARCHITECTURE.md does not list
as an exception. Reads `use crate::...` and `crate::...` paths as text (test modules excluded);
no Rust toolchain needed.

Usage: scripts/module_graph.py [--check] [SRC_DIR]
"""

import os
import re
import sys

# Lowest first. A module may import its own layer's siblings and anything below.
LAYERS = [
    {"sys", "tokenize", "shard", "prompts"},
    # The model's vocabulary: plain data types that every layer names.
    {"model::dtype", "model::deviation", "model::switches", "model::config"},
    {"schema"},
    {"numeric", "diagnose", "model", "reference", "render"},
    # Flags parsed and resolved into options before any work; run executes them.
    {"cli"},
    {"run"},
]

# Upward imports that ARCHITECTURE.md explains (importer, imported), by top-level module: none
# today. An entry here needs its reason in ARCHITECTURE.md's Layers section.
EXCEPTIONS = set()


def read_modules(root):
    modules = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            relative = os.path.relpath(os.path.join(directory, name), root)[:-3]
            module = relative.replace(os.sep, "::")
            if module.endswith("::mod"):
                module = module[: -len("::mod")]
            if module in ("lib", "main"):
                continue
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                modules[module] = re.split(r"#\[cfg\(test\)\]", handle.read())[0]
    return modules


def imports(modules):
    def resolve(path):
        parts, found = path.split("::"), None
        for end in range(1, len(parts) + 1):
            candidate = "::".join(parts[:end])
            if candidate in modules:
                found = candidate
        return found

    edges = {module: set() for module in modules}
    for module, source in modules.items():
        paths = []
        for used in re.findall(r"crate::([\w:]+(?:::\{[^;]*?\})?)", source):
            braced = re.match(r"([\w:]+?)::\{(.*)\}$", used, re.S)
            if braced:
                paths += [braced.group(1) + "::" + item.strip(" {}") for item in re.split(r"[,\s]+", braced.group(2)) if item.strip(" {}")]
            else:
                paths.append(used.rstrip(":"))
        parent = module.rsplit("::", 1)[0] if "::" in module else ""
        paths += [(parent + "::" if parent else "") + name for name in re.findall(r"\bsuper::(\w+)", source)]
        for path in paths:
            target = resolve(path)
            if target and target != module and not module.startswith(target + "::"):
                edges[module].add(target)
    return edges


def cycles(nodes, edges):
    """Strongly connected sets of more than one node (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def layer_of(module):
    """The layer of a file: its most specific entry in LAYERS."""
    best = None
    for level, members in enumerate(LAYERS):
        for member in members:
            if (module == member or module.startswith(member + "::")) and (best is None or len(member) > len(best[1])):
                best = (level, member)
    return best[0] if best else None


def main(argv):
    check = "--check" in argv
    root = next((arg for arg in argv if not arg.startswith("--")), os.path.join(os.path.dirname(__file__), "..", "src"))
    modules = read_modules(root)
    edges = imports(modules)
    top = lambda module: module.split("::")[0]
    top_edges = {}
    for source, targets in edges.items():
        for target in targets:
            if top(source) != top(target):
                top_edges.setdefault(top(source), set()).add(top(target))
    for source in sorted(top_edges):
        print(f"{source} -> {', '.join(sorted(top_edges[source]))}")
    file_cycles = cycles(modules, edges)
    module_cycles = cycles({top(module) for module in modules}, top_edges)
    upward = sorted(
        (source, target)
        for source, targets in edges.items()
        for target in targets
        if layer_of(source) is not None and layer_of(target) is not None and layer_of(target) > layer_of(source)
    )
    unplaced = sorted(module for module in modules if layer_of(module) is None)
    print(f"files: {len(modules)}; cycles between files: {len(file_cycles)}; between top-level modules: {len(module_cycles)}")
    for component in file_cycles + module_cycles:
        print("  cycle:", " <-> ".join(component))
    print(f"upward imports: {len(upward)}")
    unexplained = []
    for source, target in upward:
        explained = (top(source), top(target)) in EXCEPTIONS
        print(f"  {source} -> {target}" + ("" if explained else "  (not an ARCHITECTURE.md exception)"))
        if not explained:
            unexplained.append((source, target))
    for module in unplaced:
        print(f"  {module}: in no layer (add it to LAYERS)")
    if check and (file_cycles or module_cycles or unexplained or unplaced):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
