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
    """The slow target: the default grids of K = 2, 3, 4 (20 eps x >= 10 rows x 8 seeds) and the
    acceptance checks on every cell (hours on two cores)."""
    paths = ph.regenerate(tmp_path, workers=2)
    assert paths
    for summ in tmp_path.glob("*/phase_K*_summary.json"):
        for c in json.loads(summ.read_text()):
            assert c["residual"] <= 1e-9 and c["unstable"] == 0 and c["reached_not_derived_stable"] == []
