"""``dog_init_``'s random stream is frozen: a seed gives the same kernels as the versions these references were
taken with, for models without summed parallel depthwise branches. Long experiments compare runs across versions
of this code, so a change here must be deliberate.

What is pinned exactly is what is exact on every CPU: the family of every channel (integer draws of
``torch.Generator``, hashed). Rendered weights are floats whose last bits depend on the CPU's vector kernels, so
they are compared with a tolerance of a few float32 ulps: three channels of every layer against
``tests/data/seeded_reference.npz``, and every layer's sum of squares. Regenerate the file (only after a deliberate
change of the stream) with ``python tests/dog_init/test_seeded_reference.py``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import timm

from dog_init import dog_init_, find_depthwise

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "seeded_reference.npz"
CASES = [("convmixer_768_32", "paper"), ("convnext_atto", "paper"), ("convnext_atto", "uniform"),
         ("mobilenetv2_050", "uniform")]
# sha256 (first 32 hex digits) of every layer's name and its families in channel order: exact on any machine.
FAMILIES = {
    ("convmixer_768_32", "paper"): "0509dac614192d8c17895040274abf21",
    ("convnext_atto", "paper"): "f00de80dae1bbb36de1bf55f2900a22d",
    ("convnext_atto", "uniform"): "6a7f44353007b126d09d60af84c1a44a",
    ("mobilenetv2_050", "uniform"): "b395123cdaa587531480fecccb8e033d",
}
RTOL = 1e-5   # about 80 float32 ulps: far above CPU-dependent rounding, far below any change of the stream


def _seeded(name: str, mix: str) -> tuple[str, dict[str, np.ndarray]]:
    """(families digest, {key: array}) of ``dog_init_(timm model, mix, seed=1234)``."""
    model = timm.create_model(name, pretrained=False)
    report = dog_init_(model, mix, seed=1234)
    digest = hashlib.sha256()
    for layer in report.layers:
        digest.update(layer.name.encode() + b":" + ",".join(layer.families).encode() + b";")
    arrays = {}
    for i, (_, conv) in enumerate(find_depthwise(model)[0]):
        weight = conv.weight.detach().double().numpy()
        n = weight.shape[0]
        arrays[f"{name}/{mix}/{i}/channels"] = weight[[0, n // 2, n - 1]].astype(np.float32)
        arrays[f"{name}/{mix}/{i}/sum_sq"] = np.array(np.square(weight).sum(axis=(1, 2, 3)).sum())
    return digest.hexdigest()[:32], arrays


@pytest.mark.parametrize("name, mix", CASES)
def test_seeded_init_families_are_pinned_exactly(name, mix):
    assert _seeded(name, mix)[0] == FAMILIES[(name, mix)]


@pytest.mark.parametrize("name, mix", CASES)
def test_seeded_init_weights_match_the_reference_to_a_few_ulps(name, mix):
    _, arrays = _seeded(name, mix)
    with np.load(REFERENCE) as reference:
        keys = sorted(k for k in reference.files if k.startswith(f"{name}/{mix}/"))
        assert keys == sorted(arrays)
        for key in keys:
            want = reference[key]
            # A tap near zero carries the layer's rounding noise: the tolerance is relative to the kernel's scale.
            atol = RTOL * float(np.abs(want).max())
            np.testing.assert_allclose(arrays[key], want, rtol=RTOL, atol=atol, err_msg=key)


if __name__ == "__main__":   # regenerate the reference after a deliberate change of the stream
    found, digests = {}, {}
    for case in CASES:
        digests[case], arrays = _seeded(*case)
        found.update(arrays)
    np.savez_compressed(REFERENCE, **found)
    for case, digest in digests.items():
        print(f"    {case}: {digest!r},")
