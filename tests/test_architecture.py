"""The package's shape, held: stages as folders, imports that run one way, no circles.

Every import in ``study/`` (at the top of a module or inside a function: a deferred import
is still a dependency) is resolved to the module it names. A module may import its own
stage and the stages beneath it, never one above, and no chain of imports may come back to
where it started. The stages, beneath to above, are the order of ``STAGES``; ``errors`` is
beneath them all and ``cli`` above them all.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "study"
STAGES = ("define", "store", "track", "run", "analyse", "present")
RANK = {"errors": -1, **{s: i for i, s in enumerate(STAGES)}, "cli": len(STAGES), "__main__": len(STAGES) + 1}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The ``study`` modules a file imports, as dotted names."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("study"):
                continue
            for alias in node.names:  # ``from .run import sweep`` names a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("study")}
    return {m for m in found if m in MODULES}


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p) for p in FILES}


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) - {module_name(p)} for p in FILES}


def test_every_module_lives_in_a_stage():
    loose = [m for m in MODULES if stage(m) not in RANK and m not in ("study",)]
    assert not loose, loose
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(STAGES)


def test_imports_never_climb_to_a_later_stage():
    upward = []
    for module, targets in graph().items():
        if module == "study":
            continue
        for target in targets:
            if target != "study" and RANK[stage(target)] > RANK[stage(module)]:
                upward.append(f"{module} -> {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circles():
    g = graph()
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(g):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_each_stage_says_what_it_does_and_what_it_may_import():
    for name in STAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())) or ""
        assert len(doc.splitlines()) >= 3 and "import" in doc, name
