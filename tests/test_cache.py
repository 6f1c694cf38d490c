"""The on-disk derivation cache: exact round trip, stale and corrupted entries rebuilt,
a consistent-but-wrong entry refused by the numerical self-check, concurrent writers,
and the off switch."""
import json
import multiprocessing as mp

import numpy as np
import pytest
import sympy as sp

from symcollapse import cache
from symcollapse.numerics import kernels
from symcollapse.numerics.system import FlowSystem
from symcollapse.symbolic import EdgeLoss, derive_flow, matrix, sg, sqnorm, vector
from symcollapse.symbolic.flow import EdgeFlow


def _head(d=2, tag=""):
    x, y, W = vector("x", d), vector("y", d), matrix("W", d, d)
    lam = sp.Symbol("lam", positive=True)
    expr = sp.Rational(1, 2) * (sqnorm(W * x - sg(y)) + sqnorm(W * y - sg(W * x))) + lam * sqnorm(W) / 3
    return EdgeLoss(expr, x, y, shared=(("W", W),), name=f"cachehead{d}{tag}")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMCOLLAPSE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SYMCOLLAPSE_CACHE", raising=False)
    kernels.compile_loss.cache_clear()  # the in-process cache would hide the disk
    yield tmp_path
    kernels.compile_loss.cache_clear()


def _same(f: EdgeFlow, g: EdgeFlow) -> bool:
    pairs = list(zip(f.forces, g.forces)) + list(zip(f.forces_with_sg, g.forces_with_sg))
    return all(a[0] == b[0] and sp.srepr(a[1]) == sp.srepr(b[1]) for a, b in pairs)


def test_round_trip_is_identical_and_used(cache_dir, monkeypatch):
    loss = _head()
    flow, hit = cache.lookup(loss)
    assert not hit and cache.entry_path(loss).exists()
    again, hit = cache.lookup(loss)
    assert hit and _same(flow, again)
    # the symbolic content is what derive_flow gives, including sg atoms and the parameter
    assert _same(again, derive_flow(loss))
    # a warm compile must not derive at all
    monkeypatch.setattr(cache, "derive_flow", lambda l: pytest.fail("derived although cached"))
    cp = kernels.compile_loss(loss)
    P = np.array([[1.0, 0.5], [0.0, 2.0], [1.0, 1.0]])
    sysm = FlowSystem(cp, P, rates={"x": 1.0, "y": 0.5, "W": 0.3}, params={"lam": 0.7})
    v = np.random.default_rng(0).normal(size=sysm.size)
    ref = -sysm.rate_vector * sysm.frozen_loss_gradient_fd(v)
    assert kernels.relative_error(sysm.flow_vector(v), ref) < 1e-7


def test_stale_key_is_rebuilt(cache_dir, monkeypatch):
    loss = _head()
    cache.lookup(loss)
    path = cache.entry_path(loss)
    old_key = json.loads(path.read_bytes().split(b"\n", 1)[0])["key"]
    # another engine source / package / SymPy version changes the fingerprint
    monkeypatch.setattr(cache, "engine_fingerprint", lambda: "another-engine-version")
    assert cache.load(loss, path) is None  # the old entry is not trusted
    flow, hit = cache.lookup(loss)
    assert not hit
    new_key = json.loads(cache.entry_path(loss).read_bytes().split(b"\n", 1)[0])["key"]
    assert new_key != old_key and _same(flow, derive_flow(loss))
    assert cache.lookup(loss)[1]


def test_entry_of_another_loss_is_not_used(cache_dir):
    a, b = _head(2, "a"), EdgeLoss(sp.Rational(1, 2) * sqnorm(vector("x", 2) - vector("y", 2)),
                                   vector("x", 2), vector("y", 2), name="emb2")
    cache.lookup(a)
    cache.entry_path(b).write_bytes(cache.entry_path(a).read_bytes())  # misplaced file
    flow, hit = cache.lookup(b)
    assert not hit and _same(flow, derive_flow(b))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "empty"])
def test_corrupted_entry_is_rebuilt(cache_dir, damage):
    loss = _head()
    cache.lookup(loss)
    path = cache.entry_path(loss)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff not json at all")
    elif damage == "flip":  # one changed coefficient: valid JSON, wrong checksum
        head, payload = raw.split(b"\n", 1)
        k = payload.index(b"[-1,1,")
        path.write_bytes(head + b"\n" + payload[:k] + b"[-3,1," + payload[k + 6:])
    else:
        path.write_bytes(b"")
    assert cache.load(loss) is None
    flow, hit = cache.lookup(loss)
    assert not hit and _same(flow, derive_flow(loss))
    assert cache.lookup(loss)[1]  # the file was rewritten and is valid again


def test_consistent_but_wrong_entry_fails_the_check_and_is_rebuilt(cache_dir):
    """An entry with a valid checksum but a wrong force is caught numerically, not used."""
    loss = _head()
    good = derive_flow(loss)
    fx = dict(good.forces)["x"]
    bad = EdgeFlow(loss, tuple((b, 2 * F if b == "x" else F) for b, F in good.forces),
                   good.forces_with_sg)
    cache.store(loss, bad)
    assert cache.lookup(loss)[1]  # checksum and key are fine …
    cp = kernels.compile_loss(loss)  # … but the self-check refuses it and re-derives
    assert sp.srepr(cp.flow.force("x")) == sp.srepr(fx)
    again, hit = cache.lookup(loss)
    assert hit and _same(again, good)


def test_entry_that_fails_to_decode_on_first_use_is_rebuilt(cache_dir):
    """The SymPy forces of a cached flow are rebuilt on first use; an entry with a valid
    checksum whose terms do not decode (a generator index outside the loss's symbols) is then
    discarded with a CacheWarning and the flow derived afresh, equal to derive_flow."""
    loss = _head()
    good = derive_flow(loss)
    cache.store(loss, good)
    path = cache.entry_path(loss)
    data = json.loads(path.read_bytes().split(b"\n", 1)[1])
    num, den, mono = data["forces"][0][2][0][0]
    data["forces"][0][2][0][0] = [num, den, [[10 ** 6, 1]] + mono[1:]]
    cache._write(loss, path, json.dumps(data).encode())
    flow = cache.load(loss)
    assert isinstance(flow, cache.CachedEdgeFlow)  # the structure is fine, terms not built yet
    with pytest.warns(cache.CacheWarning, match="could not be decoded"):
        forces = flow.forces
    assert _same(EdgeFlow(loss, forces, flow.forces_with_sg), good)
    again, hit = cache.lookup(loss)
    assert hit and _same(EdgeFlow(loss, again.forces, again.forces_with_sg), good)


def _worker(args):
    folder, seed = args
    import os

    os.environ["SYMCOLLAPSE_CACHE_DIR"] = folder
    out = []
    for k in range(3):
        if (seed + k) % 2:
            cache.store(_head(), derive_flow(_head()))
        flow = cache.cached_derive_flow(_head())
        out.append(sp.srepr(flow.force("W")))
    return out


def test_concurrent_writers_never_corrupt(cache_dir):
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(4) as pool:
        results = pool.map(_worker, [(str(cache_dir), s) for s in range(8)])
    ref = sp.srepr(derive_flow(_head()).force("W"))
    assert all(r == ref for rs in results for r in rs)
    assert cache.load(_head()) is not None
    assert not list(cache_dir.glob("*.tmp"))  # no temp file left behind
    assert len(list(cache_dir.glob("flow-*.json"))) == 1


def test_disabled_cache_writes_nothing(cache_dir, monkeypatch):
    monkeypatch.setenv("SYMCOLLAPSE_CACHE", "0")
    assert not cache.enabled()
    loss = _head()
    flow, hit = cache.lookup(loss)
    assert not hit and _same(flow, derive_flow(loss))
    kernels.compile_loss(loss)
    assert not any(cache_dir.iterdir())


def test_default_location_and_unwritable_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SYMCOLLAPSE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "symcollapse"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "symcollapse"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SYMCOLLAPSE_CACHE_DIR", str(blocker / "sub"))
    loss = _head()
    flow, hit = cache.lookup(loss)  # the cache cannot be written: the result is still right
    assert not hit and _same(flow, derive_flow(loss))


def test_non_polynomial_loss_is_derived_not_cached(cache_dir):
    x, y = vector("x", 2), vector("y", 2)
    loss = EdgeLoss(sp.exp(-sqnorm(x - y)) + sp.Float(0.25) * sqnorm(x), x, y, name="nonpoly")
    flow, hit = cache.lookup(loss)
    assert not hit and not cache.entry_path(loss).exists()
    assert _same(flow, derive_flow(loss))


def test_kernel_sources_are_reused_and_a_wrong_one_is_rebuilt(cache_dir, monkeypatch):
    loss = _head(2, "kern")
    cold = kernels.compile_loss(loss)
    src = cache.load_kernels(loss)
    assert src is not None and src["fast"] and set(src["moment"]) == {"W"}
    P = np.array([[1.0, 0.5], [0.0, 2.0], [1.0, 1.0]])
    kw = dict(rates={"x": 1.0, "y": 0.5, "W": 0.3}, params={"lam": 0.7})
    v = np.random.default_rng(1).normal(size=FlowSystem(cold, P, **kw).size)
    ref = FlowSystem(cold, P, **kw).flow_vector(v)
    # warm: neither the flow nor the moment structure is derived again
    kernels.compile_loss.cache_clear()
    from symcollapse.numerics import compile as compile_mod  # where compile_flow looks it up

    monkeypatch.setattr(compile_mod, "_moment_structure", lambda *a: pytest.fail("re-derived kernels"))
    warm = kernels.compile_loss(loss)
    np.testing.assert_allclose(FlowSystem(warm, P, **kw).flow_vector(v), ref, rtol=1e-13, atol=1e-13)
    monkeypatch.undo()
    # a kernel source that is consistent on disk but numerically wrong is refused and rebuilt
    bad = json.loads(json.dumps(src))
    bad["moment"]["W"] = (src["moment"]["W"].replace("def _lambdifygenerated(", "def _orig(")
                          + "\ndef _lambdifygenerated(*a):\n    return [2 * v for v in _orig(*a)]\n")
    cache.store_kernels(loss, bad)
    kernels.compile_loss.cache_clear()
    fixed = kernels.compile_loss(loss)
    np.testing.assert_allclose(FlowSystem(fixed, P, **kw).flow_vector(v), ref, rtol=1e-13, atol=1e-13)
    assert cache.load_kernels(loss)["moment"]["W"] == src["moment"]["W"]


# --- entries with a valid checksum but wrong content: discarded and rebuilt once, with a warning
_P = np.array([[1.0, 0.5], [0.0, 2.0], [1.0, 1.0]])
_KW = dict(rates={"x": 1.0, "y": 0.5, "W": 0.3}, params={"lam": 0.7})


def _warm_entries(loss):
    """Write both entries (flow and kernel sources) and return the reference flow at a point."""
    cold = kernels.compile_loss(loss)
    v = np.random.default_rng(3).normal(size=FlowSystem(cold, _P, **_KW).size)
    ref = FlowSystem(cold, _P, path="edge", **_KW).flow_vector(v)
    kernels.compile_loss.cache_clear()
    assert cache.load_kernels(loss) is not None and cache.load(loss) is not None
    return v, ref


@pytest.mark.parametrize("damage", ["syntax", "no-affine", "not-a-dict", "bad-symbols"])
def test_malformed_kernel_entry_is_discarded_and_rebuilt(cache_dir, damage):
    loss = _head(2, f"kern-{damage}")
    v, ref = _warm_entries(loss)
    src = cache.load_kernels(loss)
    bad = json.loads(json.dumps(src))
    if damage == "syntax":
        bad["moment"]["W"] = src["moment"]["W"].replace("return", "return )(", 1)
    elif damage == "no-affine":
        del bad["affine"]
    elif damage == "not-a-dict":
        bad["moment"] = ["def f(: pass"]
    else:
        bad["moment_symbols"] = ["M0", "1x"]
    cache.store_kernels(loss, bad)  # a valid key and checksum, wrong content
    with pytest.warns(cache.CacheWarning, match="discarded"):
        cp = kernels.compile_loss(loss)
    np.testing.assert_allclose(FlowSystem(cp, _P, **_KW).flow_vector(v), ref, rtol=1e-12, atol=1e-12)
    assert cache.load_kernels(loss) == src  # rewritten from a fresh build
    kernels.compile_loss.cache_clear()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache.CacheWarning)  # once: the next run is clean
        kernels.compile_loss(loss)


def _store_wrong_forces(loss):
    good = derive_flow(loss)
    bad = EdgeFlow(loss, tuple((b, 2 * F if b == "x" else F) for b, F in good.forces), good.forces_with_sg)
    cache.store(loss, bad)
    return good


@pytest.mark.parametrize("first_use", ["edge", "jacobian"])
def test_wrong_flow_entry_with_good_kernels_is_rebuilt_on_its_deferred_check(cache_dir, first_use):
    """The moment kernels (cached, right) pass at compile time; the wrong cached forces are
    caught when the edge kernels or the Jacobian are first built, and replaced there."""
    loss = _head(2, f"defer-{first_use}")
    v, ref = _warm_entries(loss)
    good = _store_wrong_forces(loss)
    cp = kernels.compile_loss(loss)  # compiles silently from the cache …
    with pytest.warns(cache.CacheWarning, match="deferred check"):
        if first_use == "edge":
            out = FlowSystem(cp, _P, path="edge", **_KW).flow_vector(v)  # … the first use re-derives
            np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
        else:
            J = FlowSystem(cp, _P, **_KW).jacobian(v).toarray()
            assert np.all(np.isfinite(J))
    assert _same(cp.flow, good)
    again, hit = cache.lookup(loss)
    assert hit and _same(again, good)


def test_unreadable_entry_warns(cache_dir):
    loss = _head(2, "garbage")
    cache.lookup(loss)
    cache.entry_path(loss).write_bytes(b"\x00\xff not json")
    with pytest.warns(cache.CacheWarning, match="could not be read"):
        assert cache.load(loss) is None
    assert not cache.entry_path(loss).exists()


def test_cached_loss_kernel_is_used_only_if_it_equals_the_expression(cache_dir):
    """Warm loads execute the cached loss source instead of lambdifying ℓ again, but only after
    it equals SymPy's value of ℓ at a random point; a wrong cached loss is refused (rebuilt)."""
    from symcollapse.numerics.kernel_cache import kernel_sources, loss_kernel_from_source

    loss = _head(tag="lk")
    cp = kernels.compile_loss(loss)
    src = kernel_sources(cp)
    args = cp.edge_args
    assert loss_kernel_from_source(src["loss"], args, loss.value()) is not None
    bad = src["loss"].replace("return [", "return [1e-9 + ", 1)
    assert bad != src["loss"]
    assert loss_kernel_from_source(bad, args, loss.value()) is None
    cache.store_kernels(loss, dict(src, loss=bad))
    kernels.compile_loss.cache_clear()
    warm = kernels.compile_loss(loss)
    vals = np.random.default_rng(0).normal(size=len(args))
    assert abs(warm.loss_fn(*vals)[0] - cp.loss_fn(*vals)[0]) <= 1e-12 * abs(cp.loss_fn(*vals)[0])
