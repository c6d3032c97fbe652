import pytest
import torch

from core.edit import project_edit, require_representable_bias


def setup(out=12, inp=16, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, inp, generator=g)
    bias = torch.randn(out, generator=g)
    basis = torch.linalg.qr(torch.randn(inp, k, generator=g, dtype=torch.float64))[0].float()
    return weight, bias, basis


@pytest.mark.parametrize("k", [1, 3])
def test_full_input_projection_annihilates_the_subspace(k):
    weight, _, basis = setup(k=k)
    edit = project_edit(weight, basis, 1.0)
    assert edit.up.shape == (12, k) and edit.down.shape == (k, 16) and edit.bias_delta is None
    edited = edit.dense(weight)
    assert (edited @ basis).abs().max() < 1e-5
    # Inputs orthogonal to the subspace pass unchanged.
    x = torch.randn(5, 16)
    x_orth = x - (x @ basis) @ basis.T
    torch.testing.assert_close(x_orth @ edited.T, x_orth @ weight.T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("with_target", [False, True])
def test_applying_twice_equals_once(side, with_target):
    weight, bias, basis = setup()
    if side == "output":
        basis = torch.linalg.qr(torch.randn(12, 2, dtype=torch.float64))[0].float()
    target = torch.randn(basis.shape[0]) if with_target else None
    once = project_edit(weight, basis, 1.0, bias=bias, side=side, target=target)
    w1, b1 = once.dense(weight), once.dense_bias(bias)
    twice = project_edit(w1, basis, 1.0, bias=b1, side=side, target=target)
    torch.testing.assert_close(twice.dense(w1), w1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(twice.dense_bias(b1), b1, atol=1e-5, rtol=1e-5)


def test_strength_zero_is_identity_and_strength_scales():
    weight, bias, basis = setup()
    zero = project_edit(weight, basis, 0.0, bias=bias, target=torch.randn(16))
    assert torch.equal(zero.dense(weight), weight)
    assert torch.equal(zero.dense_bias(bias), bias)
    half, full = project_edit(weight, basis, 0.5), project_edit(weight, basis, 1.0)
    torch.testing.assert_close(2 * half.delta(), full.delta())


def test_affine_target_moves_the_component_to_the_safe_mean():
    weight, bias, basis = setup(k=1)
    mu = torch.randn(16)
    edit = project_edit(weight, basis, 1.0, bias=bias, target=mu)
    w, b = edit.dense(weight), edit.dense_bias(bias)
    x = torch.randn(7, 16)
    # The edited layer sees x with its component along U replaced by mu's.
    moved = x - (x @ basis) @ basis.T + (mu @ basis) * basis.T
    torch.testing.assert_close(x @ w.T + b, moved @ weight.T + bias, atol=1e-4, rtol=1e-4)
    # A layer without bias still gets the shift as a bias delta.
    assert project_edit(weight, basis, 1.0, target=mu).bias_delta.shape == (12,)


def test_output_side_removes_what_the_layer_writes():
    weight, bias, _ = setup()
    basis = torch.linalg.qr(torch.randn(12, 2, dtype=torch.float64))[0].float()
    edit = project_edit(weight, basis, 1.0, bias=bias, side="output")
    y = torch.randn(9, 16) @ edit.dense(weight).T + edit.dense_bias(bias)
    assert (y @ basis).abs().max() < 1e-4


def test_a_single_vector_is_accepted():
    weight, _, basis = setup(k=1)
    torch.testing.assert_close(project_edit(weight, basis[:, 0]).delta(), project_edit(weight, basis).delta())


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"strength": -0.5}, "amplify"),
        ({"strength": float("nan")}, "finite"),
        ({"basis": torch.ones(15, 1) / 15 ** 0.5}, "width 16"),
        ({"basis": torch.ones(16, 2)}, "orthonormal"),
        ({"side": "middle"}, "side"),
        ({"target": torch.zeros(3)}, "target has 3"),
        ({"weight": torch.full((12, 16), float("inf"))}, "NaN or Inf"),
        ({"weight": torch.zeros(16)}, "2-D"),
    ],
)
def test_bad_edits_are_refused(kwargs, fragment):
    weight, _, basis = setup(k=1)
    args = {"weight": weight, "basis": basis, "strength": 1.0, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        project_edit(args.pop("weight"), args.pop("basis"), args.pop("strength"), **args)


def test_dense_checks_shape():
    weight, _, basis = setup()
    with pytest.raises(ValueError, match="weight"):
        project_edit(weight, basis).dense(torch.zeros(3, 3))


def test_an_edited_bias_beyond_its_dtype_or_float32_is_refused_with_the_layer_named():
    """project_edit checks its result in float64; ComfyUI casts the patched bias to the weight's dtype afterwards,
    where a huge safe mean gave an fp16 bias of Inf (every output NaN)."""
    bias, delta = torch.full((4,), 0.5), torch.tensor([1.0, -7e4, 2.0, 0.0])
    require_representable_bias(bias, delta, torch.float32, "blocks.0.cross_attn.k")
    require_representable_bias(bias, delta, torch.bfloat16, "blocks.0.cross_attn.k")
    with pytest.raises(ValueError, match=r"'blocks.0.cross_attn.k': the edit would move its bias to 7e\+04, beyond "
                                         r"the 6.55e\+04 its torch.float16 can hold.*damaged or hand-edited"):
        require_representable_bias(bias, delta, torch.float16, "blocks.0.cross_attn.k")
    with pytest.raises(ValueError, match="move its bias to inf"):  # finite in float64, Inf once cast to float32
        require_representable_bias(None, torch.tensor([1e39], dtype=torch.float64), torch.float32, "x")
    with pytest.raises(ValueError, match="move its bias to nan"):
        require_representable_bias(bias, torch.tensor([0.0, float("nan"), 0.0, 0.0]), torch.float32, "x")
