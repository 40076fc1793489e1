"""Family mixes: presets, normalisation, largest-remainder allocation and sample()'s exact shares."""
from __future__ import annotations

import collections
import math

import pytest
import torch

import dog_init
from dog_init import FAMILIES, MIXES, allocate, resolve_mix, sample

CUSTOM = {"on_centre": 3, "first_derivative": 1.5, "on_square": 0.5}


def test_presets_exist_and_resolve():
    """The documented presets exist, resolve to known families and sum to 1."""
    assert {"paper", "on_off", "uniform"} <= set(MIXES)
    for name in MIXES:
        mix = resolve_mix(name)
        assert set(mix) <= set(FAMILIES)
        assert math.isclose(sum(mix.values()), 1.0, rel_tol=1e-12)
        assert all(share > 0 for share in mix.values())


def test_paper_mix_values():
    """The paper mix is Appendix F's ConvMixer initialisation."""
    assert resolve_mix("paper") == pytest.approx({
        "on_centre": 0.45, "off_centre": 0.10, "on_cross": 0.075, "off_cross": 0.075,
        "first_derivative": 0.20, "second_derivative": 0.10})
    assert resolve_mix("uniform") == pytest.approx({f: 1 / len(FAMILIES) for f in FAMILIES})
    assert resolve_mix("on_off") == pytest.approx({"on_centre": 0.5, "off_centre": 0.5})


def test_resolve_returns_a_copy():
    """Mutating a resolved preset does not change the preset."""
    mix = resolve_mix("paper")
    mix["on_centre"] = 99.0
    assert MIXES["paper"]["on_centre"] == 0.45


def test_dict_mix_normalised():
    """A dict mix is normalised to sum 1, keeps proportions, drops zero weights."""
    mix = resolve_mix({**CUSTOM, "off_cross": 0})
    assert mix == pytest.approx({"on_centre": 0.6, "first_derivative": 0.3, "on_square": 0.1})
    assert "off_cross" not in mix
    assert list(mix) == [f for f in FAMILIES if f in mix]   # FAMILIES order


@pytest.mark.parametrize("mix", ["paper", "on_off", "uniform", CUSTOM], ids=str)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 13, 24, 64, 96, 100, 257, 768, 1000, 1001])
def test_allocate_sums_and_is_close(mix, n):
    """allocate(): counts sum to n and each differs from n * share by less than 1."""
    counts = allocate(n, mix)
    shares = resolve_mix(mix)
    assert sum(counts.values()) == n
    assert set(counts) <= set(shares)
    for family, share in shares.items():
        count = counts.get(family, 0)
        assert count >= 0 and isinstance(count, int)
        assert abs(count - n * share) < 1, (family, count, n * share)


@pytest.mark.parametrize("mix", ["paper", "uniform", CUSTOM], ids=str)
@pytest.mark.parametrize("n", [7, 10, 13, 97])
def test_allocate_is_largest_remainder(mix, n):
    """The families that get rounded up are those with the largest fractional parts of n * share."""
    counts = allocate(n, mix)
    exact = {f: n * s for f, s in resolve_mix(mix).items()}
    up = [f for f in exact if counts.get(f, 0) > math.floor(exact[f])]
    down = [f for f in exact if counts.get(f, 0) == math.floor(exact[f])]
    assert len(up) == n - sum(math.floor(v) for v in exact.values())
    if up and down:
        assert min(exact[f] % 1 for f in up) >= max(exact[f] % 1 for f in down) - 1e-9


def test_allocate_paper_on_1000_exact():
    """The paper mix on 1000 kernels is exact."""
    assert allocate(1000, "paper") == {"on_centre": 450, "off_centre": 100, "on_cross": 75, "off_cross": 75,
                                       "first_derivative": 200, "second_derivative": 100}


@pytest.mark.parametrize("n, expected", [
    (72, {"on_centre": 33, "off_centre": 7, "on_cross": 6, "off_cross": 5, "first_derivative": 14,
          "second_derivative": 7}),
    (1152, {"on_centre": 519, "off_centre": 115, "on_cross": 87, "off_cross": 86, "first_derivative": 230,
            "second_derivative": 115}),
    (7, {"on_centre": 3, "off_centre": 1, "on_cross": 1, "off_cross": 0, "first_derivative": 1,
         "second_derivative": 1}),
])
def test_allocate_ties_go_to_first_family(n, expected):
    """Equal remainders (72 * 0.45 = 32.4 and 72 * 0.075 = 5.4 exactly) are broken by FAMILIES order, not by the
    float noise in 72 * 0.075 = 5.3999999999999995."""
    assert allocate(n, "paper") == expected


@pytest.mark.parametrize("n", [-5, 2.5, "3", True])
def test_allocate_refuses_what_is_not_a_count(n):
    with pytest.raises(ValueError, match=r"n must be an integer >= 0"):
        allocate(n, "paper")


@pytest.mark.parametrize("mix", ["paper", "on_off", "uniform", CUSTOM], ids=str)
def test_allocate_same_for_resolved_mix(mix):
    """Normalising a mix again (as dog_init_ does with its report's mix) never changes the allocation."""
    resolved = resolve_mix(mix)
    twice = resolve_mix(resolved)
    for n in range(0, 1500):
        assert allocate(n, resolved) == allocate(n, mix) == allocate(n, twice), n


def test_allocate_uniform_divisible_exact():
    """A uniform mix over 8 families splits 768 channels into 96 each."""
    assert allocate(768, "uniform") == {f: 96 for f in FAMILIES}


@pytest.mark.parametrize("mix", ["paper", "on_off", "uniform", CUSTOM], ids=str)
def test_sample_shares_equal_mix(mix):
    """sample() of a large draw has exactly allocate()'s family counts, each matching a kernel of that family."""
    n = 2000
    kernels, families = sample(n, 7, mix, generator=torch.Generator().manual_seed(0))
    assert kernels.shape == (n, 7, 7) and kernels.dtype == torch.float32
    assert len(families) == n
    counted = collections.Counter(families)
    expected = {f: c for f, c in allocate(n, mix).items() if c}
    assert dict(counted) == expected
    for family, share in resolve_mix(mix).items():
        assert abs(counted[family] / n - share) < 1 / n + 1e-12
    torch.testing.assert_close(kernels.flatten(1).norm(dim=1), torch.ones(n))


def test_sample_is_shuffled():
    """sample() places families in a random order, not in blocks."""
    _, families = sample(200, 5, "on_off", generator=torch.Generator().manual_seed(1))
    first_half = collections.Counter(families[:100])
    assert 20 < first_half["on_centre"] < 80


def test_sample_labels_match_kernels():
    """Each label belongs to its kernel: with the on/off mix the centre pixel's sign follows the label."""
    kernels, families = sample(400, 7, "on_off", generator=torch.Generator().manual_seed(2))
    centre = kernels[:, 3, 3]
    for value, family in zip(centre.tolist(), families):
        assert (value > 0) == (family == "on_centre")


def test_sample_seeded():
    """Same seed -> identical kernels and labels; different seed -> different."""
    a = sample(64, 5, "paper", generator=torch.Generator().manual_seed(3))
    b = sample(64, 5, "paper", generator=torch.Generator().manual_seed(3))
    c = sample(64, 5, "paper", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert not torch.equal(a[0], c[0])


def test_sample_zero():
    """sample(0, k) gives an empty batch and no labels."""
    kernels, families = sample(0, 5, "paper")
    assert kernels.shape == (0, 5, 5) and families == []


def test_assign_counts():
    """assign() gives one family per channel with allocate()'s exact counts."""
    families = dog_init.mixes.assign(96, "paper", torch.Generator().manual_seed(0))
    assert len(families) == 96
    assert dict(collections.Counter(families)) == {f: c for f, c in allocate(96, "paper").items() if c}
