"""The package's import graph: no cycle, no import from a lower layer to a higher one, and no
import deferred into a function except to an optional dependency (or one of the listed debts).

Layers, lowest first (a module may import only from its own layer or lower ones):
    0 base      errors, validation, tolerance, closed_forms, verification, the package root (lazy names)
    1 symbolic  symbolic/*                (losses, stop-gradient, flows, reductions)
    2 numerics  numerics/*, cache         (compiled kernels, assembled systems, integration)
    3 models    models/* (except a model package's ``job`` module), variants
    4 outputs   outputs/* (LaTeX, figures, atomic writes, the report)
    5 jobs      jobs/*, models/<name>/job, literature/*, phase (the phase-diagram driver)
    6 app       cli

KNOWN_* below are the debts left by issue #11 with their owner; the test fails on any edge that
is not listed, so the lists can only shrink. Remove an entry when its edge is gone.
"""
import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "symcollapse"

LAYERS = {"base": 0, "symbolic": 1, "numerics": 2, "models": 3, "outputs": 4, "jobs": 5, "app": 6}

# (importer, imported): upward edges still to remove
KNOWN_UPWARD = {
    # the engine's 30-digit slow-rate row assembles a model's system (move to jobs.engine)
    ("symcollapse.symbolic.mpcheck", "symcollapse.models.couplings"),
    ("symcollapse.symbolic.mpcheck", "symcollapse.numerics.kernels"),
    ("symcollapse.symbolic.mpcheck", "symcollapse.numerics.system"),
    # LaTeX of found invariants (belongs in outputs.latex)
    ("symcollapse.symbolic.invariants", "symcollapse.outputs.latex"),
    # the built-in 'embedding' sweep point (move the point functions to the models/jobs layer)
    ("symcollapse.numerics.sweeps", "symcollapse.models.couplings"),
    ("symcollapse.numerics.sweeps", "symcollapse.models.embedding"),
    # write_report(out) runs every job when no modules are given (a public default)
    ("symcollapse.outputs.report", "symcollapse.jobs"),
    # the cache's atomic writes (move the helper to the base layer)
    ("symcollapse.cache", "symcollapse.outputs.io"),
}

# cycles (as sets of modules) still to break
KNOWN_CYCLES = [
]

# importer module -> internal modules it may still import inside a function (each one a debt)
KNOWN_DEFERRED = {
    "symcollapse.cache": {"symcollapse"},
    "symcollapse.cli": {"symcollapse.jobs", "symcollapse.verification", "symcollapse.phase", "symcollapse.numerics.sweeps", "symcollapse.outputs.io",
                        "symcollapse.outputs.report"},
    "symcollapse.outputs.report": {"symcollapse.jobs"},
    "symcollapse.numerics.sweeps": {"symcollapse.models.couplings", "symcollapse.models.embedding",
                                    "symcollapse.validation"},
    "symcollapse.numerics.trajectory": {"symcollapse.numerics.fitting", "symcollapse.numerics.method_choice",
                                        "symcollapse.numerics.column_flow", "symcollapse.validation"},
    "symcollapse.numerics.method_choice": {"symcollapse.numerics.column_flow"},
    "symcollapse.symbolic.mpcheck": {"symcollapse.models.couplings", "symcollapse.numerics.kernels",
                                     "symcollapse.numerics.system", "symcollapse.symbolic.stopgrad",
                                     "symcollapse.symbolic.symbols"},
    "symcollapse.symbolic.invariants": {"symcollapse.outputs.latex", "symcollapse.verification"},
    "symcollapse.models.embedding": {"symcollapse.symbolic.sectors"},
    "symcollapse.variants": {"symcollapse.numerics.kernels", "symcollapse.numerics.system",
                             "symcollapse.numerics.graph", "symcollapse.symbolic.assemble",
                             "symcollapse.symbolic.flow"},
    # jobs import their outputs (matplotlib) and heavy numerics only when they write or run
    "symcollapse.models.embedding.job": {"symcollapse.outputs.latex", "symcollapse.outputs.io",
                                   "symcollapse.outputs.figures", "symcollapse.numerics.metrics"},
    "symcollapse.models.head.job": {"symcollapse.outputs.latex", "symcollapse.outputs.io",
                              "symcollapse.outputs.figures", "symcollapse.models.head.phase",
                              "symcollapse.numerics.graph", "symcollapse.numerics.integrate",
                              "symcollapse.models.embedding", "symcollapse.numerics.basins",
                              "symcollapse.numerics.families", "symcollapse.phase",
                              "symcollapse.outputs.phase_figures"},
    "symcollapse.models.teacher_student.job": {"symcollapse.outputs.latex", "symcollapse.outputs.io",
                                         "symcollapse.outputs.figures", "symcollapse.models.embedding",
                                         "symcollapse.numerics.linear_map", "symcollapse.numerics.kernels",
                                         "symcollapse.numerics.metrics", "symcollapse.symbolic.reparam"},
    "symcollapse.jobs.literature": {"symcollapse.outputs.io", "symcollapse.outputs.latex",
                                    "symcollapse.outputs.report", "symcollapse.numerics.integrate",
                                    "symcollapse.literature.invariants_demo", "symcollapse.literature.saxe",
                                    "symcollapse.literature.simsiam", "symcollapse.literature.ufm",
                                    "symcollapse.symbolic.invariants"},
    "symcollapse.jobs.engine": {"symcollapse.symbolic.mpcheck"},
    "symcollapse.models.ema.job": {"symcollapse.outputs.latex", "symcollapse.outputs.io"},
    # the matrix path, the phase diagrams and the losses module (added alongside #11)
    "symcollapse.symbolic.losses": {"symcollapse.validation"},
    "symcollapse.outputs.phase_figures": {"symcollapse.outputs.figures"},
    "symcollapse.phase": {"symcollapse.models.couplings", "symcollapse.models.head", "symcollapse.numerics.basins",
                          "symcollapse.numerics.families", "symcollapse.numerics.sweeps", "symcollapse.outputs.io",
                          "symcollapse.outputs.phase_figures"},
}


def _modules() -> dict:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def layer(mod: str) -> int:
    parts = mod.split(".")
    if len(parts) == 1 or parts[1] in ("errors", "validation", "tolerance", "closed_forms", "verification",
                                       "deprecation"):
        return LAYERS["base"]
    top = parts[1]
    if top == "models" and parts[-1] == "job" and len(parts) >= 4:
        return LAYERS["jobs"]
    if top == "cli":
        return LAYERS["app"]
    if top == "cache":
        return LAYERS["numerics"]
    if top == "variants":
        return LAYERS["models"]
    if top in ("literature", "phase"):
        return LAYERS["jobs"]
    assert top in LAYERS, f"module {mod} has no layer: add it to the layer table of this test"
    return LAYERS[top]


def import_edges() -> list:
    """(importer, imported, deferred, line) for every internal import."""
    mods = _modules()
    edges = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" for a in node.names]
                targets = [n for n in names if n in mods] or [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t != "symcollapse" and not t.startswith("symcollapse."):
                    continue
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t != mod:
                    edges.append((mod, t, id(node) not in top, node.lineno))
    return edges


def _cycles(edges) -> list:
    graph = collections.defaultdict(set)
    for a, b, _, _ in edges:
        graph[a].add(b)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


EDGES = import_edges()


def test_the_graph_is_found():
    mods = {a for a, *_ in EDGES}
    assert {"symcollapse.models.head", "symcollapse.numerics.system", "symcollapse.models.head.job"} <= mods
    assert len(EDGES) > 100


def test_no_new_upward_import():
    upward = sorted({(a, b) for a, b, _, _ in EDGES if layer(b) > layer(a)} - KNOWN_UPWARD)
    assert upward == [], "imports from a lower layer to a higher one: " + ", ".join(f"{a} -> {b}" for a, b in upward)


def test_no_new_cycle():
    new = [c for c in _cycles(EDGES) if not any(c <= k for k in KNOWN_CYCLES)]
    assert new == [], f"import cycles: {new}"


def test_no_new_deferred_import():
    new = sorted((a, b, line) for a, b, deferred, line in EDGES
                 if deferred and b not in KNOWN_DEFERRED.get(a, set()))
    assert new == [], "internal imports deferred into functions (import them at the top): " + ", ".join(
        f"{a}:{line} -> {b}" for a, b, line in new)


def test_the_checker_sees_a_violation(tmp_path):
    """A synthetic upward, deferred edge is detected by the same rules."""
    fake = [("symcollapse.symbolic.flow", "symcollapse.jobs.head", True, 1)]
    assert [(a, b) for a, b, _, _ in fake if layer(b) > layer(a)] == [("symcollapse.symbolic.flow", "symcollapse.jobs.head")]
    assert _cycles([("a", "b", False, 1), ("b", "a", True, 2)]) == [{"a", "b"}]


def _alias_target(path: Path):
    """The target of a deprecated alias module (the marker's value), or None if it is not one."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__deprecated_alias_of__"]
                and isinstance(node.value, ast.Constant)):
            return node.value.value
    return None


ALIASES = {mod: _alias_target(path) for mod, path in _modules().items() if _alias_target(path)}


def test_alias_modules_are_only_the_re_export():
    """An old module path is a docstring, the helper's import, the marker and the call: nothing else."""
    assert {"symcollapse.symbolic.meanfield", "symcollapse.numerics.phase", "symcollapse.numerics.stability",
            "symcollapse.jobs.head", "symcollapse.jobs.embedding", "symcollapse.jobs.teacher_student"} <= set(ALIASES)
    mods = _modules()
    for mod, target in ALIASES.items():
        body = ast.parse(mods[mod].read_text(encoding="utf-8")).body
        kinds = [type(n).__name__ for n in body]
        assert kinds == ["Expr", "ImportFrom", "Assign", "Expr"], (mod, kinds)
        assert isinstance(body[0].value, ast.Constant) and "Deprecated alias" in body[0].value.value, mod
        imp = body[1]
        assert imp.module == "deprecation" and imp.level >= 1 or imp.module == "symcollapse.deprecation", mod
        assert [a.name for a in imp.names] == ["alias_module"], mod
        call = body[3].value
        assert isinstance(call, ast.Call) and getattr(call.func, "id", None) == "alias_module", mod
        assert [getattr(a, "id", None) for a in call.args] == ["__name__", "__deprecated_alias_of__"], mod
        assert target in mods and target not in ALIASES, f"{mod} -> {target}: not a module of the package"


def test_no_module_imports_an_old_path():
    used = sorted((a, b) for a, b, _, _ in EDGES if b in ALIASES and a not in ALIASES)
    assert used == [], f"import the new home instead of the deprecated alias: {used}"


def test_alias_warns_and_is_the_new_module():
    import importlib
    import sys

    import pytest

    for old, new in ALIASES.items():
        parent, _, child = old.rpartition(".")
        saved = sys.modules.pop(old, None)
        try:
            if hasattr(sys.modules.get(parent), child):
                delattr(sys.modules[parent], child)
            with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
                mod = importlib.import_module(old)
            assert mod is importlib.import_module(new)
        finally:
            if saved is not None:
                sys.modules[old] = saved


def test_one_home_per_model():
    """Every registered model is a package models/<name>/ whose job module is models/<name>/job."""
    from symcollapse.models.registry import MODELS

    mods = _modules()
    for name, entry in MODELS.items():
        home = f"symcollapse.models.{name}"
        assert mods[home].name == "__init__.py", f"{name}: the model is not a package"
        assert entry.model.partition(":")[0] == home, name
        assert entry.job == f"{home}.job" and f"{home}.job" in mods, name
