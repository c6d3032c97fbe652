"""Properties of the closed-form edit that the formula tests in test_edit.py leave open (found by mutation testing:
each test here fails on a small change of core/edit.py that every earlier test let pass)."""

import pytest
import torch

from core.edit import project_edit, require_representable_bias


def layer(out=12, inp=16, k=2, side="input", seed=3):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, inp, generator=g, dtype=torch.float64)
    bias = torch.randn(out, generator=g, dtype=torch.float64)
    width = out if side == "output" else inp
    basis = torch.linalg.qr(torch.randn(width, k, generator=g, dtype=torch.float64))[0]
    target = torch.randn(width, generator=g, dtype=torch.float64)
    return weight, bias, basis, target


def test_the_output_side_affine_edit_moves_what_the_layer_writes_along_u_to_the_target():
    """Output side, target mu: every output's component along U becomes mu's (the sign of the target's term), the
    rest of the output is untouched."""
    weight, bias, basis, mu = layer(side="output")
    edit = project_edit(weight, basis, 1.0, bias=bias, side="output", target=mu)
    x = torch.randn(9, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y0 = x @ weight.T + bias
    y = x @ edit.dense(weight).double().T + edit.dense_bias(bias).double()
    torch.testing.assert_close(y @ basis, (mu @ basis).expand(9, -1), atol=1e-4, rtol=0)
    outside = lambda t: t - (t @ basis) @ basis.T  # noqa: E731
    torch.testing.assert_close(outside(y), outside(y0), atol=1e-4, rtol=0)


@pytest.mark.parametrize("side", ["input", "output"])
def test_the_low_rank_factors_equal_the_formulas_computed_by_hand_in_float64(side):
    """``up @ down`` and ``bias_delta`` against the module docstring's formulas, at a strength other than 1."""
    weight, bias, basis, mu = layer(side=side)
    lam = 0.7
    edit = project_edit(weight.float(), basis.float(), lam, bias=bias.float(), side=side, target=mu.float())
    w, b, u = weight.float().double(), bias.float().double(), basis.float().double()
    m = mu.float().double()
    if side == "input":
        delta, bias_delta = -lam * (w @ u) @ u.T, lam * (w @ u) @ (u.T @ m)
    else:
        delta, bias_delta = -lam * u @ (u.T @ w), -lam * u @ (u.T @ b) + lam * u @ (u.T @ m)
    torch.testing.assert_close(edit.delta().double(), delta, atol=1e-5, rtol=0)
    torch.testing.assert_close(edit.bias_delta.double(), bias_delta, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strength", [float("nan"), float("inf")])
def test_a_strength_that_is_not_finite_is_refused_as_the_strength(strength):
    """Blamed on the strength, not on the layer's weight or the refusal vector (what the edit's own NaN check says)."""
    weight, _, basis, _ = layer()
    with pytest.raises(ValueError, match=r"strength must be a finite number >= 0, got (nan|inf)"):
        project_edit(weight, basis, strength)


def test_a_basis_a_percent_off_orthonormal_is_refused():
    """The orthonormality check's tolerance (1e-4 on ``U^T U``): columns 1 % too long would scale the removal by
    1.02 (pushing past the target), so they are refused; float32 rounding of orthonormal columns passes."""
    weight, _, basis, _ = layer()
    project_edit(weight, basis.float(), 1.0)
    with pytest.raises(ValueError, match="orthonormal"):
        project_edit(weight, basis * 1.01, 1.0)


def test_the_merged_weight_and_bias_keep_the_layers_dtype():
    """``dense`` and ``dense_bias`` compute in float32 and return the dtype of the tensors they were given."""
    weight, bias, basis, mu = layer()
    edit = project_edit(weight.half(), basis, 1.0, bias=bias.half(), target=mu)
    assert edit.dense(weight.half()).dtype == torch.float16
    assert edit.dense_bias(bias.half()).dtype == torch.float16
    torch.testing.assert_close(edit.dense_bias(bias.half()).float(), (bias.half().float() + edit.bias_delta),
                               atol=1e-2, rtol=1e-3)


def test_a_bias_at_exactly_the_largest_value_of_its_dtype_is_accepted():
    """The boundary of require_representable_bias: "exceeds the largest value of dtype" refuses above it, not at it
    (65504 is a finite float16)."""
    limit = torch.finfo(torch.float16).max
    require_representable_bias(None, torch.tensor([limit, -limit]), torch.float16, "x")
    require_representable_bias(torch.tensor([limit - 4.0]), torch.tensor([4.0]), torch.float16, "x")
    with pytest.raises(ValueError, match="beyond"):
        require_representable_bias(torch.tensor([limit]), torch.tensor([32.0]), torch.float16, "x")


def test_the_bias_check_reads_the_sum_of_the_bias_and_its_delta():
    """``b + bias_delta`` is what the layer holds: a delta that brings a large bias back is fine, one that adds to it
    past the dtype's range is not, whatever each alone reads."""
    bias = torch.tensor([6e4, 1.0])
    require_representable_bias(bias, torch.tensor([-1e4, 0.0]), torch.float16, "x")
    with pytest.raises(ValueError, match="move its bias to 7e\\+04"):
        require_representable_bias(bias, torch.tensor([1e4, 0.0]), torch.float16, "x")


def test_a_basis_that_is_not_finite_is_named_as_such():
    """Not reported as "not orthonormal" (whose remedy, orthonormalise with QR, cannot help a NaN)."""
    weight, _, basis, _ = layer()
    basis = basis.clone()
    basis[0, 0] = float("nan")
    with pytest.raises(ValueError, match="basis contains NaN or Inf"):
        project_edit(weight, basis, 1.0)
