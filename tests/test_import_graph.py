"""The package's import graph: no cycle, no import from a lower layer to a higher one, and no
import deferred into a function except to an optional dependency (or one of the listed debts).

Layers, lowest first (a module may import only from its own layer or lower ones):
    0 base      errors, validation, tolerance, closed_forms, verification, atomic (file writes),
                deprecation (old paths), the package root (lazy names)
    1 symbolic  symbolic/*                (losses, stop-gradient, flows, reductions)
    2 numerics  numerics/*, cache         (compiled kernels, assembled systems, integration)
    3 models    models/* (except a model package's ``job`` module), variants
    4 outputs   outputs/* (LaTeX, figures, the report, the derivation scripts' helper)
    5 jobs      jobs/*, models/<name>/job, literature/*, phase (the phase-diagram driver),
                sweep_points (the command line's built-in sweep points)
    6 app       cli

Deferred (function-level) imports, of internal modules and of the required dependencies, are
allowed only with a reason from REASONS: an optional dependency of pyproject.toml, or the
command line's startup rule (issue #14). The KNOWN_* lists (debts) are empty; the test fails on
any edge that is not listed and on any listed edge that is gone.
"""
import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "symcollapse"

LAYERS = {"base": 0, "symbolic": 1, "numerics": 2, "models": 3, "outputs": 4, "jobs": 5, "app": 6}

# (importer, imported): upward edges still to remove
KNOWN_UPWARD: set = set()

# cycles (as sets of modules) still to break
KNOWN_CYCLES: list = []

CLI_RULE = ("the command line's startup rule (#14): every argument is validated, exit 2 within ~0.2 s, "
            "before SymPy, SciPy or matplotlib are imported")


def _optional_dependencies() -> set:
    import tomllib

    data = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))
    deps = {d for ds in data["project"].get("optional-dependencies", {}).values() for d in ds}
    return {d.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip() for d in deps}


#: the allowed reasons for a deferred internal import
REASONS = {CLI_RULE} | {f"optional dependency: {d}" for d in _optional_dependencies()}

# importer -> {internal module imported inside a function: reason (one of REASONS)}
DEFERRED = {
    # the commands import their engine only after their arguments are checked
    "symcollapse.cli": {t: CLI_RULE for t in (
        "symcollapse.jobs", "symcollapse.verification", "symcollapse.phase", "symcollapse.numerics.sweeps",
        "symcollapse.sweep_points", "symcollapse.outputs.report")},
    # the CLI imports symcollapse.jobs to check --model; the report (LaTeX, matplotlib) only when written
    "symcollapse.jobs": {"symcollapse.outputs.report": CLI_RULE},
    # a sweep point's validate() runs in the CLI before the model (SymPy, SciPy) is built
    "symcollapse.sweep_points": {"symcollapse.models.embedding": CLI_RULE},
    # the CLI imports the phase driver to check --K, --eps, --d (check_phase_args) before the engine
    "symcollapse.phase": {t: CLI_RULE for t in (
        "symcollapse.models.couplings", "symcollapse.models.head", "symcollapse.models.head.sector_stability",
        "symcollapse.numerics.basins",
        "symcollapse.numerics.families", "symcollapse.numerics.sweeps", "symcollapse.outputs.io",
        "symcollapse.outputs.phase_figures")},
}

# importer -> internal modules it still imports inside a function without a reason (debts): none left
KNOWN_DEFERRED: dict = {}


#: the required (non-optional) dependencies of pyproject.toml: imported at the top like internal
#: modules, unless a reason of REASONS applies
def _required_dependencies() -> set:
    import tomllib

    data = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))
    return {d.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip() for d in data["project"]["dependencies"]}


# importer -> required dependencies it still imports inside a function (debts): none left
KNOWN_DEFERRED_REQUIRED: dict = {}


def _in_functions(tree) -> set:
    """ids of the import statements inside a function (the deferred ones; a module-level
    ``try: import … except ImportError`` is not deferred)."""
    out = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            out |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return out


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
                                       "deprecation", "atomic"):
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
    if top in ("literature", "phase", "sweep_points"):
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
        deferred = _in_functions(tree)
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
                    edges.append((mod, t, id(node) in deferred, node.lineno))
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
                 if deferred and b not in KNOWN_DEFERRED.get(a, set()) and b not in DEFERRED.get(a, {}))
    assert new == [], "internal imports deferred into functions (import them at the top): " + ", ".join(
        f"{a}:{line} -> {b}" for a, b, line in new)


def test_every_deferred_import_has_an_allowed_reason():
    bad = sorted((a, b, why) for a, targets in DEFERRED.items() for b, why in targets.items() if why not in REASONS)
    assert bad == [], f"a deferred import needs an optional dependency or the CLI startup rule: {bad}"
    assert "optional dependency: dask" in REASONS  # the extras are read from pyproject.toml


def test_the_lists_hold_no_stale_entry():
    """An entry whose edge is gone must be removed (the lists only shrink)."""
    deferred = {(a, b) for a, b, d, _ in EDGES if d}
    listed = {(a, b) for table in (DEFERRED, KNOWN_DEFERRED) for a, bs in table.items() for b in bs}
    assert sorted(listed - deferred) == []
    assert sorted(KNOWN_UPWARD - {(a, b) for a, b, _, _ in EDGES}) == []
    cycles = _cycles(EDGES)
    assert [k for k in KNOWN_CYCLES if not any(k <= c for c in cycles)] == []


def test_the_cli_rule_is_kept():
    """The deferred imports of the CLI rule are what keeps the bad-argument path light: importing
    the command line, the job names, the sweep points and the phase driver loads neither SymPy,
    SciPy nor matplotlib."""
    import subprocess
    import sys

    code = ("import sys; import symcollapse.cli, symcollapse.jobs, symcollapse.sweep_points, symcollapse.phase; "
            "from symcollapse.jobs import job_names; job_names(); "
            "print(sorted(m for m in ('sympy', 'scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent,
                         check=True, timeout=60).stdout.strip()
    assert out == "[]", out


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


def _moved_tables() -> dict:
    """module -> its MOVED table {name: new module} (names that left it, see symcollapse.deprecation)."""
    out = {}
    for mod, path in _modules().items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["MOVED"]:
                out[mod] = node.value
    return out


def test_moved_names_forward_to_their_new_module():
    """Every name a module gave away is defined at the top of its new module and no longer in the old
    one; reading it from the old module warns and returns the new object."""
    import importlib
    import warnings

    import pytest

    tables = _moved_tables()
    assert {"symcollapse.symbolic.mpcheck", "symcollapse.symbolic.invariants", "symcollapse.numerics.sweeps",
            "symcollapse.outputs.report"} <= set(tables)
    for mod in tables:
        old = importlib.import_module(mod)
        assert callable(old.__dict__["__getattr__"]), mod
        for name, new in old.MOVED.items():
            assert name not in old.__dict__, f"{mod}.{name} is still defined there"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target = getattr(importlib.import_module(new), name)
            with pytest.warns(DeprecationWarning, match=f"{mod}.{name}"):
                assert getattr(old, name) is target
        with pytest.raises(AttributeError):
            getattr(old, "no_such_name")


def _deferred_required() -> set:
    """(importer, required dependency) for every import of SymPy, NumPy, SciPy, mpmath or matplotlib
    inside a function."""
    req = _required_dependencies()
    out = set()
    for mod, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deferred = _in_functions(tree)
        for node in ast.walk(tree):
            if id(node) not in deferred or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                continue
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            out |= {(mod, n.split(".")[0]) for n in names if n.split(".")[0] in req}
    return out


def test_required_dependencies_are_imported_at_the_top():
    assert {"sympy", "numpy", "scipy", "mpmath", "matplotlib"} <= _required_dependencies()
    found = _deferred_required()
    listed = {(a, b) for a, bs in KNOWN_DEFERRED_REQUIRED.items() for b in bs}
    assert sorted(found - listed) == [], "import the required dependency at the top of the module"
    assert sorted(listed - found) == [], "remove the stale entry from KNOWN_DEFERRED_REQUIRED"
