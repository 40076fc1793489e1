"""Closed-form kernel families: shapes, norms, seeding, each family's defining structure, and the errors that name a
bad value (parameters outside their domain, missing parameters, sizes). An independent template matcher:
test_family_templates.py."""
from __future__ import annotations

import pytest
import torch

import dog_init
from dog_init import FAMILIES, SECOND_DERIVATIVE_KINDS, SQUARE_CORNERS, generate, render, sample_params
from dog_init.families import check_size

SIZES = list(range(3, 32, 2))
CENTRED = dict(dx=0.0, dy=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- shapes, dtype, norm, seeding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", SIZES)
def test_shape_dtype_unit_norm(family, size):
    """generate() gives (n, k, k) float32 finite kernels of unit L2 norm for every odd size 3..31."""
    k = generate(family, 6, size, generator=gen(size))
    assert k.shape == (6, size, size)
    assert k.dtype == torch.float32
    assert torch.isfinite(k).all()
    torch.testing.assert_close(k.flatten(1).norm(dim=1), torch.ones(6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_n_zero(family):
    """n=0 gives an empty (0, k, k) float32 tensor."""
    k = generate(family, 0, 7, generator=gen())
    assert k.shape == (0, 7, 7) and k.dtype == torch.float32


@pytest.mark.parametrize("family", FAMILIES)
def test_seed_determinism(family):
    """Same generator seed gives bit-identical kernels; a different seed gives different ones."""
    a = generate(family, 16, 7, generator=gen(3))
    b = generate(family, 16, 7, generator=gen(3))
    c = generate(family, 16, 7, generator=gen(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_within_a_draw_differ(family):
    """Parameters are drawn per kernel: the kernels of one draw are not all the same."""
    k = generate(family, 8, 7, generator=gen(5))
    assert not torch.allclose(k[0].expand_as(k), k)


def test_fixing_a_parameter_keeps_the_other_draws():
    """Every parameter is drawn even when fixed, so fixing theta leaves the other parameters of a seed unchanged."""
    free = sample_params("first_derivative", 10, generator=gen(7))
    fixed = sample_params("first_derivative", 10, generator=gen(7), theta=90.0)
    assert torch.equal(fixed["theta"], torch.full((10,), 90.0))
    for name in free:
        if name != "theta":
            assert torch.equal(free[name], fixed[name]), name


def test_fixed_tensor_parameter():
    """A fixed parameter may be a per-kernel tensor of shape (n,)."""
    thetas = torch.tensor([0.0, 90.0, 180.0, 270.0])
    p = sample_params("first_derivative", 4, generator=gen(), theta=thetas)
    assert torch.equal(p["theta"], thetas)


# --- family structure ----------------------------------------------------------------------------------------------
def outer_ring(k: torch.Tensor) -> torch.Tensor:
    """Mean of the border pixels of each kernel (n, k, k)."""
    mask = torch.ones(k.shape[-2:], dtype=torch.bool)
    mask[1:-1, 1:-1] = False
    return k[:, mask].mean(dim=1)


@pytest.mark.parametrize("size", [3, 5, 7, 9, 15])
def test_on_centre_centre_above_surround(size):
    """on_centre: the centre pixel is above the mean of the outer ring (and positive)."""
    k = generate("on_centre", 200, size, generator=gen(size), **CENTRED)
    c = size // 2
    assert (k[:, c, c] > outer_ring(k)).all()
    assert (k[:, c, c] > 0).all()


@pytest.mark.parametrize("size", [3, 5, 7, 9, 15])
def test_off_centre_centre_below_surround(size):
    """off_centre: the centre pixel is below the mean of the outer ring (and negative)."""
    k = generate("off_centre", 200, size, generator=gen(size), **CENTRED)
    c = size // 2
    assert (k[:, c, c] < outer_ring(k)).all()
    assert (k[:, c, c] < 0).all()


@pytest.mark.parametrize("on, off", [("on_centre", "off_centre"), ("on_cross", "off_cross"),
                                     ("on_square", "off_square")])
@pytest.mark.parametrize("size", [3, 7, 13])
def test_off_is_minus_on_under_same_seed(on, off, size):
    """off_* families are exactly the negation of on_* under the same seed."""
    a = generate(on, 32, size, generator=gen(11))
    b = generate(off, 32, size, generator=gen(11))
    assert torch.equal(b, -a)


@pytest.mark.parametrize("size", [3, 5, 7, 11])
def test_first_derivative_antisymmetry(size):
    """first_derivative: theta=0 is antisymmetric left-right, theta=90 antisymmetric up-down."""
    k0 = generate("first_derivative", 50, size, generator=gen(), theta=0.0, **CENTRED)
    torch.testing.assert_close(k0, -torch.flip(k0, dims=[-1]), atol=1e-6, rtol=0)
    k90 = generate("first_derivative", 50, size, generator=gen(), theta=90.0, **CENTRED)
    torch.testing.assert_close(k90, -torch.flip(k90, dims=[-2]), atol=1e-6, rtol=0)
    # and not trivially zero / symmetric the other way
    assert not torch.allclose(k0, torch.flip(k0, dims=[-1]), atol=1e-3)


@pytest.mark.parametrize("theta, side", [(0.0, "right"), (90.0, "top"), (180.0, "left"), (270.0, "bottom")])
@pytest.mark.parametrize("size", [3, 5, 7, 11])
def test_first_derivative_positive_lobe_where_theta_points(theta, side, size):
    """first_derivative: the positive lobe is on the side theta points to (y up, row 0 is the top row)."""
    k = generate("first_derivative", 100, size, generator=gen(1), theta=theta, **CENTRED)
    c = size // 2
    halves = {"right": k[:, :, c + 1:], "left": k[:, :, :c], "top": k[:, :c, :], "bottom": k[:, c + 1:, :]}
    opposite = {"right": "left", "left": "right", "top": "bottom", "bottom": "top"}[side]
    assert (halves[side].sum(dim=(1, 2)) > 0).all()
    assert (halves[opposite].sum(dim=(1, 2)) < 0).all()
    # the single largest pixel lies on that side too
    rows, cols = torch.unravel_index(k.flatten(1).argmax(dim=1), (size, size))
    on_side = {"right": cols > c, "left": cols < c, "top": rows < c, "bottom": rows > c}[side]
    assert on_side.all()


@pytest.mark.parametrize("kind", ["uu", "vv"])
@pytest.mark.parametrize("size", [3, 5, 7, 11])
def test_second_derivative_uu_vv_symmetric(kind, size):
    """second_derivative uu / vv at theta=0 is mirror symmetric left-right and up-down."""
    k = generate("second_derivative", 50, size, generator=gen(), theta=0.0, kind=kind, **CENTRED)
    torch.testing.assert_close(k, torch.flip(k, dims=[-1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(k, torch.flip(k, dims=[-2]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [3, 5, 7, 11])
def test_second_derivative_uv_antisymmetric(size):
    """second_derivative uv at theta=0 is antisymmetric left-right and up-down, positive in the top-right."""
    k = generate("second_derivative", 50, size, generator=gen(), theta=0.0, kind="uv", sign=1.0, **CENTRED)
    torch.testing.assert_close(k, -torch.flip(k, dims=[-1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(k, -torch.flip(k, dims=[-2]), atol=1e-6, rtol=0)
    c = size // 2
    assert (k[:, :c, c + 1:].sum(dim=(1, 2)) > 0).all()   # top-right quadrant (+x, +y)


@pytest.mark.parametrize("size", [3, 5, 7, 11])
def test_second_derivative_uu_positive_centre_column(size):
    """sign=+1 uu at theta=0: a positive centre column (a vertical line detector), flanks below it; sign=-1 flips."""
    kw = dict(theta=0.0, kind="uu", **CENTRED)
    k = generate("second_derivative", 100, size, generator=gen(2), sign=1.0, **kw)
    c = size // 2
    column = k[:, :, c]
    assert (k[:, c, c] > 0).all()
    assert (column.mean(dim=1) > 0).all()
    assert (column.mean(dim=1) > k[:, :, c - 1].mean(dim=1)).all()
    assert (column.mean(dim=1) > k[:, :, :c].mean(dim=(1, 2))).all()
    neg = generate("second_derivative", 100, size, generator=gen(2), sign=-1.0, **kw)
    torch.testing.assert_close(neg, -k)


@pytest.mark.parametrize("size", [3, 5, 7, 11])
def test_second_derivative_vv_positive_centre_row(size):
    """sign=+1 vv at theta=0: a positive centre row (a horizontal line detector)."""
    k = generate("second_derivative", 100, size, generator=gen(2), theta=0.0, kind="vv", sign=1.0, **CENTRED)
    c = size // 2
    assert (k[:, c, c] > 0).all()
    assert (k[:, c, :].mean(dim=1) > k[:, c - 1, :].mean(dim=1)).all()


def cross_and_diagonal_means(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    size = k.shape[-1]
    c = size // 2
    idx = torch.arange(size)
    off_centre = idx != c
    arms = torch.cat([k[:, c, off_centre], k[:, off_centre, c]], dim=1).mean(dim=1)
    diagonals = torch.cat([k[:, idx[off_centre], idx[off_centre]],
                           k[:, idx[off_centre], (size - 1 - idx)[off_centre]]], dim=1).mean(dim=1)
    return arms, diagonals


@pytest.mark.parametrize("size", [3, 5, 7, 11])
def test_cross_arms_above_diagonals(size):
    """on_cross: mean along the centre row and column (excluding centre) is above the mean along the diagonals;
    off_cross is its negation."""
    on = generate("on_cross", 200, size, generator=gen(6), **CENTRED)
    arms, diagonals = cross_and_diagonal_means(on)
    assert (arms > diagonals).all()
    off = generate("off_cross", 200, size, generator=gen(6), **CENTRED)
    arms, diagonals = cross_and_diagonal_means(off)
    assert (arms < diagonals).all()
    assert torch.equal(off, -on)


def quadrant_masses(k: torch.Tensor) -> dict[str, torch.Tensor]:
    c = k.shape[-1] // 2
    return {"top_right": k[:, :c, c + 1:].sum(dim=(1, 2)), "top_left": k[:, :c, :c].sum(dim=(1, 2)),
            "bottom_left": k[:, c + 1:, :c].sum(dim=(1, 2)), "bottom_right": k[:, c + 1:, c + 1:].sum(dim=(1, 2))}


@pytest.mark.parametrize("corner", SQUARE_CORNERS)
@pytest.mark.parametrize("size", [3, 5, 7, 11])
def test_square_block_in_named_corner(corner, size):
    """on_square: the quadrant named by ``corner`` holds the largest mass; off_square = -on_square."""
    on = generate("on_square", 100, size, generator=gen(8), corner=corner, **CENTRED)
    masses = quadrant_masses(on)
    for other in SQUARE_CORNERS:
        if other != corner:
            assert (masses[corner] > masses[other]).all(), (corner, other)
    assert (on >= 0).all()
    off = generate("off_square", 100, size, generator=gen(8), corner=corner, **CENTRED)
    assert torch.equal(off, -on)
    assert (quadrant_masses(off)[corner] < 0).all()


def test_corner_names_match_indices():
    """A corner given by name renders the same as its index into SQUARE_CORNERS."""
    for index, name in enumerate(SQUARE_CORNERS):
        by_name = generate("on_square", 4, 7, generator=gen(), corner=name)
        by_index = generate("on_square", 4, 7, generator=gen(), corner=float(index))
        assert torch.equal(by_name, by_index)


def test_kind_names_match_indices():
    """A second-derivative kind given by name renders the same as its index into SECOND_DERIVATIVE_KINDS."""
    for index, name in enumerate(SECOND_DERIVATIVE_KINDS):
        by_name = generate("second_derivative", 4, 7, generator=gen(), kind=name)
        by_index = generate("second_derivative", 4, 7, generator=gen(), kind=float(index))
        assert torch.equal(by_name, by_index)


@pytest.mark.parametrize("family", FAMILIES)
def test_large_kernel_pattern_stays_central(family):
    """On a 27x27 kernel each pattern stays central: > 90 % of the energy lies in the central 9x9."""
    k = generate(family, 300, 27, generator=gen(9))
    central = (k[:, 9:18, 9:18] ** 2).sum(dim=(1, 2))
    assert (central > 0.9).all(), central.min().item()


# --- errors --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, bad", [
    (lambda: generate("blob", 4, 7), "blob"),
    (lambda: render("blob", 7, {"sigma": torch.ones(1)}), "blob"),
    (lambda: sample_params("blob", 4), "blob"),
    (lambda: generate("on_centre", 4, 4), "4"),
    (lambda: generate("on_centre", 4, 8), "8"),
    (lambda: generate("on_centre", 4, 1), "1"),
    (lambda: generate("on_centre", 4, -3), "-3"),
    (lambda: generate("on_centre", 4, 7.0), "7.0"),
    (lambda: generate("on_centre", 4, "7"), "'7'"),
    (lambda: generate("on_centre", 4, True), "True"),
    (lambda: generate("on_centre", -1, 7), "-1"),
    (lambda: generate("on_centre", 2.5, 7), "2.5"),
    (lambda: generate("on_centre", 4, 7, wobble=1.0), "wobble"),
    (lambda: generate("on_square", 4, 7, kind="uu"), "kind"),
    (lambda: generate("second_derivative", 4, 7, kind="xy"), "xy"),
    (lambda: generate("on_square", 4, 7, corner="middle"), "middle"),
    (lambda: generate("first_derivative", 4, 7, theta="up"), "up"),
    (lambda: generate("first_derivative", 4, 7, theta=torch.zeros(3)), "(3,)"),
    (lambda: dog_init.sample(4, 7, "nonsense"), "nonsense"),
    (lambda: dog_init.sample(4, 6, "paper"), "6"),
    (lambda: dog_init.sample(-2, 7, "paper"), "-2"),
    (lambda: dog_init.resolve_mix({"on_centre": 1.0, "blob": 1.0}), "blob"),
    (lambda: dog_init.resolve_mix({"on_centre": -1.0}), "-1"),
    (lambda: dog_init.resolve_mix({"on_centre": float("nan")}), "nan"),
    (lambda: dog_init.resolve_mix({"on_centre": float("inf")}), "inf"),
    (lambda: dog_init.resolve_mix({"on_centre": 0.0, "off_centre": 0}), "0"),
    (lambda: dog_init.resolve_mix({}), "{}"),
    (lambda: dog_init.resolve_mix({"on_centre": "lots"}), "lots"),
    (lambda: dog_init.resolve_mix({"on_centre": None}), "None"),
    (lambda: dog_init.resolve_mix(3), "3"),
    (lambda: dog_init.allocate(10, "nonsense"), "nonsense"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_errors_name_the_bad_value(call, bad):
    """Every documented misuse raises ValueError whose message contains the offending value."""
    with pytest.raises(ValueError) as info:
        call()
    assert bad in str(info.value)


@pytest.mark.parametrize("fixed, match", [
    ({"sigma": 0.0}, r"sigma must be finite and > 0, got 0\.0"),
    ({"sigma": float("nan")}, r"sigma must be finite and > 0, got nan"),
    ({"ratio": -1.0}, r"ratio must be finite and > 0"),
    ({"elongation": 0.5}, r"elongation must be finite and >= 1"),
    ({"theta": float("inf")}, r"theta must be finite"),
    ({"ratio": 1.0, "surround": 1.0}, r"is zero and has no unit-norm shape.*ratio=1, surround=1"),
    ({"dx": 1e3}, r"is zero and has no unit-norm shape"),
])
def test_fixed_parameters_outside_their_domain_are_refused(fixed, match):
    with pytest.raises(ValueError, match=match):
        generate("on_centre", 2, 7, **fixed)


def test_domains_of_the_other_families():
    with pytest.raises(ValueError, match=r"width must be finite and > 0"):
        generate("on_cross", 1, 7, width=0.0)
    with pytest.raises(ValueError, match=r"sign must be one of 1, -1, got 0\.5"):
        generate("second_derivative", 1, 7, sign=0.5)
    with pytest.raises(ValueError, match=r"softness must be finite and > 0"):
        generate("on_square", 1, 5, softness=0.0)
    assert torch.isfinite(generate("on_square", 3, 5, offset=0.0)).all()   # a centred block is a valid shape


def test_render_names_missing_parameters():
    with pytest.raises(ValueError, match=r"render\('on_centre'\) needs parameters sigma.*missing: sigma"):
        render("on_centre", 7, {})
    params = sample_params("on_centre", 2)
    params["dx"] = params["dx"][:1]
    with pytest.raises(ValueError, match=r"same length"):
        render("on_centre", 7, params)


def test_size_rule_and_message_agree():
    assert check_size(33) == 33 and check_size(101) == 101
    for bad in (1, 4, 7.0, "7", True):
        with pytest.raises(ValueError, match=r"odd integer >= 3 \(3, 5, 7, 9, \.\.\.\), got") as info:
            check_size(bad)
        assert "31" not in str(info.value)
