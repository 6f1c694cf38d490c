"""`symcollapse phase`: bad arguments exit 2 before any work; a small grid produces data whose end
states are fixed points of derived-stable families; an interrupted run resumes without recomputing."""
import json
import time

import pytest

import symcollapse.phase as ph
from symcollapse.cli import main

README_COMMAND = "symcollapse phase --model head --K 2 --eps 0.25 --d 1 --seeds 3 --out phase"  # as in README
ARGS = README_COMMAND.split()[1:-2]


@pytest.mark.parametrize("bad", [["--K", "1"], ["--eps", "1.2"], ["--d", "0"], ["--d", "1,1"], ["--seeds", "0"],
                                 ["--model", "embedding"], ["--eps", "a"], ["--eta-W", "-1"]])
def test_bad_arguments_exit_2_before_work(tmp_path, bad, capsys):
    args = list(ARGS)
    for k in range(0, len(bad), 2):
        i = args.index(bad[k]) if bad[k] in args else None
        if i is None:
            args += bad[k:k + 2]
        else:
            args[i + 1] = bad[k + 1]
    out = tmp_path / "o"
    t0 = time.time()
    assert main(args + ["--out", str(out)]) == 2
    assert time.time() - t0 < 2.0
    assert not out.exists()
    assert "error" in capsys.readouterr().err


def test_readme_phase_command_end_states_are_derived_stable_fixed_points_and_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(README_COMMAND.split()[1:]) == 0  # as written: data, summary and figure
    out = tmp_path / "phase"
    assert (out / "phase_K2_eps_d.png").exists() and (out / "phase_K2_eps_d.pdf").exists()
    quick = ph.cells_from_results(out / "phase_K2.jsonl", 2, quick=True)  # the figures' derived layer
    assert all(c["reached_not_derived_stable"] == [] and c["n"] == 3 for c in quick.values())
    lines = (out / "phase_K2.jsonl").read_text().splitlines()
    assert len(lines) == 3
    summary = json.loads((out / "phase_K2_summary.json").read_text())
    assert sum(c["n"] for c in summary) == 3
    for c in summary:
        assert c["residual"] <= 1e-9 and c["unstable"] == 0 and c["unclassified"] == 0
        assert c["reached_not_derived_stable"] == []
        assert abs(sum(c["basin"].values()) - 1.0) < 1e-12
    for line in lines:
        r = json.loads(line)["result"]
        assert r["kind"] == 1.0 and r["residual"] <= 1e-9 and r["invariant_drift"] <= 1e-6
    # interrupt: keep the first line and half of the second (a torn write), then resume
    (out / "phase_K2.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    calls = []
    real = ph.phase_point

    def counting(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(ph, "phase_point", counting)
    assert main(ARGS + ["--no-figures", "--out", str(out)]) == 0
    assert len(calls) == 2
    again = sorted((out / "phase_K2.jsonl").read_text().splitlines())
    assert len(again) == 3 and lines[0] in again
    assert {json.loads(x)["id"]: json.loads(x)["result"] for x in again} == \
        {json.loads(x)["id"]: json.loads(x)["result"] for x in lines}


def test_balanced_for_eps_picks_the_closest_small_ensemble():
    n, mu, e = ph.balanced_for_eps(2, 0.25, 8)
    assert e == mu / (2 * n + mu) and abs(e - 0.25) < 1e-12
    assert ph.balanced_for_eps(3, 0.0) == (1, 0, 0.0)


@pytest.mark.slow
def test_default_grids_regenerate(tmp_path):
    """The slow target: the default grids of K = 2, 3, 4 (20 eps x >= 10 d x 8 seeds), K = 10 and the
    (eps, eta_W) grid, with the acceptance checks on every cell (hours on two cores)."""
    paths = ph.regenerate(tmp_path / "grids", workers=2, figures=tmp_path / "figs")
    assert (tmp_path / "figs" / "phase_eps_d.png").exists() and (tmp_path / "figs" / "phase_eps_etaW.png").exists()
    checks = json.loads((tmp_path / "figs" / "phase_data" / "checks.json").read_text())
    assert {"phase_K2_eps_d", "phase_K3_eps_d", "phase_K4_eps_d", "phase_K10_eps_d", "phase_K2_eps_etaW"} == set(checks)
    for name, c in checks.items():
        K = int(name.split("_")[1][1:])
        g = ph.default_grid(K)
        cells = len(g["eps_etaW"]) * len(g["eta_W"]) if name.endswith("etaW") else len(g["eps"]) * len(g["d"])
        assert c["cells"] == cells and c["end_states"] == cells * g["seeds"], name
        assert c["max_residual"] <= 1e-9 and c["unstable"] == 0 and c["unclassified"] == 0, name
        assert c["reached_not_derived_stable"] == 0 and sum(c["families"].values()) == c["end_states"], name
    assert paths


@pytest.mark.parametrize("K", [2, 3, 4])
def test_default_grid_eps_are_distinct_balanced_ensembles_realised_exactly(K):
    g = ph.default_grid(K)
    assert len(g["eps"]) >= 20 and len(set(g["eps"])) == len(g["eps"]) and len(g["d"]) >= 10
    assert max(g["d"]) >= 2 * K + 4 and g["seeds"] >= 8
    for e in g["eps"]:
        n, mu, real = ph.balanced_for_eps(K, e, g["n_max"])
        m = mu * K * (K - 1) // 2
        assert real == m / (K * n + m) and abs(real - e) <= 1e-11
        assert K * n + m <= ph.GRID_N_SIZE[K]
    with pytest.raises(ph.InvalidParameterError, match="count"):
        ph.realisable_eps(K, 500)


def test_derived_point_search_agrees_with_the_exhaustive_family_scan():
    """The early-exit search of the derived layer against scanning every family (K = 2, small cells)."""
    import numpy as np

    from symcollapse.numerics import families as fm

    for d in (1, 2, 3):
        der = ph.derived_point(K=2, eps=0.25, d=d, n_max=4)
        model, *_ = ph._model(2, 0.25, d, 1.0, 0.1, 1.0, 4)
        sep, col = [], []
        for f in fm.enumerate_families(model.graph, d):
            v, vb, _ = fm.scan_family(model, f, spares=(-0.5, 0.5), members=lambda f: [dict(lengths=np.ones(f.rank))])
            if ph._separated(f):
                sep.append(v == "stable" or fm.scan_family(model, f)[0] == "stable")
            else:
                col.append((vb == "stable", f.keeps(0.0)))
        assert der["stable_separated"] == float(any(sep)), d
        assert der["stable_collapsed"] == float(any(ok for ok, k0 in col if k0 <= ph.COLLAPSED_MAX_NU0)), d
        assert der["families"] == len(sep) + len(col)
    assert ph.derived_point(K=2, eps=0.25, d=1, n_max=4)["stable_separated"] == 0.0  # one mode: no separation
    assert ph.derived_point(K=2, eps=0.25, d=2, n_max=4)["separated_rank"] == 2.0


def _cells(K, yname):
    ys = (1, 2, 3) if yname == "d" else (0.1, 1.0, 10.0)
    cells = {}
    for j, e in enumerate((0.1, 0.2, 0.3, 0.4)):
        for i, y in enumerate(ys):
            key = (e, y, 1.0) if yname == "d" else (e, 3, y)
            fams = {"+0.5000x1 +1.0000x1": 5, "Z=0": 3} if (i, j) == (0, 0) else {"+0.5000x1 +1.0000x1": 8}
            cells[key] = {"n": 8, "eps_real": e + 0.01, "separated": i / 2, "rho_mean": 0.3 * i + 0.05 * j,
                          "families": fams, "residual": 1e-10 * (i + 1), "unclassified": 0,
                          "derived_separated": i > 0, "derived_collapsed": i == 0, "unstable": 0,
                          "reached_not_derived_stable": ["bad"] if (i, j) == (2, 3) else []}
    return cells


def test_figures_from_summaries_draw_png_and_pdf(tmp_path):
    data = tmp_path / "phase_data"
    data.mkdir()
    for K in (2, 3):
        ph.write_summary(_cells(K, "d"), data / f"phase_K{K}_eps_d.json")
    ph.write_summary(_cells(2, "eta_W"), data / "phase_K2_eps_etaW.json")
    back = ph.read_summary(data / "phase_K2_eps_d.json")
    assert back == _cells(2, "d")
    paths = ph.figures_from_summaries(tmp_path)
    assert [p.name for p in paths] == ["phase_eps_d.png", "phase_eps_etaW.png", "checks.json"]
    checks = json.loads(paths[-1].read_text())
    assert set(checks) == {"phase_K2_eps_d", "phase_K3_eps_d", "phase_K2_eps_etaW"}
    assert checks["phase_K2_eps_d"]["end_states"] == 12 * 8 and checks["phase_K2_eps_d"]["reached_not_derived_stable"] == 1
    assert checks["phase_K2_eps_d"]["families"] == {"+0.5000x1 +1.0000x1": 12 * 8 - 3, "Z=0": 3}
    for p in paths[:2]:
        assert p.stat().st_size > 10_000 and p.with_suffix(".pdf").exists()
    with pytest.raises(ph.InvalidParameterError, match="summaries"):
        ph.figures_from_summaries(tmp_path / "empty")


@pytest.mark.parametrize("argv", [["phase", "--regenerate", "--K", "2", "--out", "o"],
                                  ["phase", "--eps", "0.2", "--d", "1", "--out", "o"],
                                  ["phase", "--K", "2", "--eps", "0.2", "--d", "1", "--n-max", "0", "--out", "o"]])
def test_phase_cli_argument_combinations_exit_2(tmp_path, monkeypatch, argv, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert not (tmp_path / "o").exists()
    assert "error" in capsys.readouterr().err


def test_regenerate_cli_writes_summaries_and_paper_figures_and_resumes(tmp_path, monkeypatch, capsys):
    """`symcollapse phase --regenerate` on tiny grids (the default grids are the slow test): the data,
    the committed-figure summaries, the two paper figures drawn from them; a rerun computes nothing."""
    tiny = {2: {"eps": (0.25,), "d": (1, 2), "seeds": 1, "n_max": 4, "eps_etaW": (0.25,), "eta_W": (0.5, 1.0),
                "d_etaW": 1, "etaW": True},
            3: {"eps": (0.25,), "d": (1,), "seeds": 1, "n_max": 4, "etaW": False, "search": False}}
    monkeypatch.setattr(ph, "default_grid", lambda K: tiny[K])
    monkeypatch.setattr(ph.regenerate, "__defaults__", ((2, 3),) + ph.regenerate.__defaults__[1:])
    out, figs = tmp_path / "grids", tmp_path / "figs"
    assert main(["phase", "--regenerate", "--out", str(out), "--figures", str(figs)]) == 0
    names = sorted(p.name for p in (figs / "phase_data").iterdir())
    assert names == ["checks.json", "phase_K2_eps_d.json", "phase_K2_eps_etaW.json", "phase_K3_eps_d.json"]
    for name in ("phase_eps_d", "phase_eps_etaW"):
        assert (figs / f"{name}.png").exists() and (figs / f"{name}.pdf").exists()
    k2 = ph.read_summary(figs / "phase_data" / "phase_K2_eps_d.json")
    assert set(k2) == {(0.25, 1, 1.0), (0.25, 2, 1.0)}
    assert k2[(0.25, 1, 1.0)]["derived_separated"] is False and k2[(0.25, 2, 1.0)]["derived_separated"] is True
    k3 = ph.read_summary(figs / "phase_data" / "phase_K3_eps_d.json")  # search=False: reached families only
    assert all(c["derived_collapsed"] is None and c["derived"] is None and c["reached_not_derived_stable"] == []
               for c in k3.values())
    calls = []
    monkeypatch.setattr(ph, "phase_point", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ph, "derived_point", lambda **kw: calls.append(kw))
    assert main(["phase", "--regenerate", "--out", str(out), "--no-figures"]) == 0
    assert calls == []


def test_reached_family_is_classified_at_its_reached_amplitudes():
    """The red-cross gap (docs/model.md §3.1): at K = 2, ε = 0.24, d = 3, η_W/η_x = 0.05 seed 1 ends in
    the family (+ν_s, +1), none of whose scanned members (unit/seeded lengths, spares ±0.5, ±1.5) is
    stable; its member at the end state's amplitude lengths and spare head eigenvalue is — by the
    engine Jacobian and by the derived sector blocks alike — so the family is derived stable there.
    A member that is not stable (unit lengths, spare 0.5) leaves the family a FAIL."""
    import numpy as np

    from symcollapse.models.head import sector_stability as ss
    from symcollapse.numerics import families as fm

    args = dict(K=2, eps=0.238095238095, d=3, eta_W=0.05, n_max=20)
    r = ph.phase_point(seed=1, **args)
    key = ph.family_key(r)
    assert key == "+0.7845x1 +1.0000x1" and r["kind"] == 1.0 and r["residual"] <= 1e-9
    lengths, spares = ph.member_of(r)
    model, n, mu, _ = ph._model(2, args["eps"], 3, 1.0, 0.1, 0.05, 20)
    fam = {f.key: f for f in fm.enumerate_families(model.graph, 3)}[key]
    # the member data describe the end state: a fixed point whose head spectrum is the reached one
    Z, W = fm.representative(model.graph, 3, fam, lengths=np.array(lengths), spare=np.array(spares))
    assert np.max(np.abs(model.system.flow_vector(model.pack(Z, W)))) <= 1e-12
    kept_nus = [r[f"nu_{i}"] for i in range(len(fam.ranks)) if r[f"r_{i}"] > 0]
    assert np.allclose(np.sort(np.linalg.eigvals(W).real), np.sort(kept_nus + list(spares)), atol=1e-9)
    assert fm.state_family(model.graph, Z)[0].key == key
    amp = [np.linalg.svd(c, compute_uv=False)[0] for c, k in zip(fm.level_amplitudes(model.graph, Z), fam.ranks) if k]
    assert np.allclose(amp, lengths, rtol=1e-9)
    assert fm.scan_family(model, fam)[0] != "stable"  # the scan alone misses it (the old red cross)
    jac = ph.member_stability(model, fam, lengths, spares, (2, n, mu))  # small system: engine Jacobian
    mem = ss.aligned_member(2, n, mu, 3, fam.ranks, lengths=np.array(lengths), spares=np.array(spares))
    assert jac == "stable" and ss.predict(mem, 1.0, 0.1, 0.05).label == "stable"
    assert ss.compare_with_jacobian(model, mem)["match"] <= 1e-9  # the blocks' spectrum is the Jacobian's
    verdict = ph.reached_family_verdict(2, args["eps"], 3, 1.0, 0.1, 0.05, 20, key, ((lengths, spares),))
    assert verdict == ph.REACHED_AMPLITUDES
    assert ph.reached_family_verdict(2, args["eps"], 3, 1.0, 0.1, 0.05, 20, key, (((1.0, 1.0), (0.5,)),)) \
        == ph.REACHED_NONE
    assert ph.reached_family_verdict(2, args["eps"], 3, 1.0, 0.1, 0.05, 20, "+0.1234x1", ()) == ph.REACHED_NONE
    cells = ph.attach_derived(ph.summarise([{"params": {"K": 2, "eps": args["eps"], "d": 3, "eta_W": 0.05,
                                                        "seed": 1, "n_max": 20}, "result": r}]), 2, search=False)
    (c,) = cells.values()
    assert c["reached_not_derived_stable"] == [] and c["reached_stable_at_amplitudes"] == [key]
    assert "members" not in c and ph.grid_checks(cells)["reached_stable_at_amplitudes"] == 1
    assert c["derived_separated"] is True
    # with a searched derived layer that found no stable separated member (the old hatching of this cell)
    # the family stable at its reached amplitudes still makes the cell derived-separated
    rec = {"params": {"K": 2, "eps": args["eps"], "d": 3, "eta_W": 0.05, "seed": 1, "n_max": 20}, "result": r}
    der = [{"params": {"eps": args["eps"], "d": 3, "eta_W": 0.05}, "result": {"stable_separated": 0.0,
                                                                           "stable_collapsed": 0.0}}]
    (c,) = ph.attach_derived(ph.summarise([rec]), 2, derived=der).values()
    assert c["derived_separated"] is True and c["derived_collapsed"] is False
