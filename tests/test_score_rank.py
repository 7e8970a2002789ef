import numpy as np

from iqpfr.data.dataset import rank_scores


def test_rank_scores_fill_every_bucket_and_keep_order():
    rng = np.random.default_rng(0)
    # min-max-like scores crowded in the middle, as on a small FFHQ subset
    raw = 0.45 + 0.1 * rng.standard_normal(1000)
    ranked = rank_scores(raw)
    assert np.all((ranked > 0) & (ranked < 1))
    assert np.array_equal(np.argsort(raw, kind="stable"), np.argsort(ranked, kind="stable"))
    counts = np.bincount(np.floor(10 * ranked).astype(int), minlength=10)
    assert counts.min() == counts.max() == 100
    assert np.isclose((ranked > 0.7).mean(), 0.3, atol=0.002)


def test_rank_scores_ties_share_a_value():
    ranked = rank_scores(np.array([0.2, 0.5, 0.5, 0.9]))
    assert ranked[1] == ranked[2]
    assert ranked[0] < ranked[1] < ranked[3]
