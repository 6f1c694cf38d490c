"""Figure output: a vector PDF beside every PNG (both byte-reproducible), literal subscripts
written as mathtext, round-off below the noise floor not drawn as data."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from symcollapse.outputs.io import atomic_savefig, mathtext_label  # noqa: E402


@pytest.mark.parametrize("text,want", [
    ("Δ_min", r"$Δ_{\mathrm{min}}$"), ("slow rate r_s", "slow rate $r_{s}$"),
    ("K=3, η_x=η_y=1", "K=3, $η_{x}$=$η_{y}$=1"), ("|Y_∞|/|Y_0|", "|$Y_{∞}$|/|$Y_{0}$|"),
    ("already $r_s$", "already $r_s$"), ("no subscript", "no subscript"), ("fig_name", "fig_name"),
])
def test_mathtext_label(text, want):
    assert mathtext_label(text) == want


def _figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.semilogy([1, 2, 3], [1.0, 0.1, 0.01], label="fitted decay of Δ_min")
    ax.set_xlabel("η_W / η_x")
    ax.set_ylabel("slow rate r_s")
    ax.legend()
    return fig


def test_pdf_beside_png_reproducible_and_labels_in_mathtext(tmp_path):
    paths = []
    for k in range(2):
        fig = _figure()
        paths.append(atomic_savefig(fig, tmp_path / f"f{k}.png"))
        texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
        plt.close(fig)
        for t in texts:  # no literal underscore outside $…$
            assert "_" not in "".join(t.split("$")[0::2]), t
    a, b = tmp_path / "f0.pdf", tmp_path / "f1.pdf"
    assert a.read_bytes().startswith(b"%PDF") and a.read_bytes() == b.read_bytes()
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert b"/CreationDate" not in a.read_bytes()


def test_noise_floor_mask():
    from symcollapse.models.head.job import NOISE_FLOOR, resolved

    v = np.array([1.0, 1e-3, 1e-8, 5e-10, 2e-9, 1e-12])
    r = resolved(v)
    assert np.array_equal(r[:3], v[:3]) and np.all(np.isnan(r[3:]))  # stops at the floor, stays off
    assert NOISE_FLOOR == 1e-9
    assert np.isnan(resolved([np.nan, 1.0])).all()
