"""DoGConv2d, convert_ and bake_: the learnable-DoG depthwise layer of issue 10."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dog_init import dog_init_


def test_seeded_dog_init_is_pinned():
    # Written before render_assignment learnt to return parameters: the refactor must keep the random stream.
    model = nn.Sequential(nn.Conv2d(8, 16, 5, groups=8), nn.Conv2d(16, 16, 3, groups=16),
                          nn.Conv2d(16, 16, 7, groups=16, bias=False))
    report = dog_init_(model, "uniform", seed=1234)
    weights = [conv.weight.detach().double() for conv in model]
    index = [torch.arange(w.numel(), dtype=torch.float64).view_as(w) for w in weights]
    assert [w.sum().item() for w in weights] == pytest.approx(
        [-0.3499379171214582, 1.1715288775926145, 0.42376938633917316], rel=1e-5, abs=1e-6)
    assert [(w * torch.cos(i)).sum().item() for w, i in zip(weights, index)] == pytest.approx(
        [-0.8079602960283998, -0.44584220532915675, 0.043117371768347956], rel=1e-5, abs=1e-6)
    assert [w.abs().sum().item() for w in weights] == pytest.approx(
        [28.724065951262034, 20.566825825998173, 31.43643362226284], rel=1e-6)
    assert [layer.families[:4] for layer in report.layers] == [
        ["off_square", "off_cross", "off_centre", "on_centre"],
        ["off_square", "off_cross", "second_derivative", "on_square"],
        ["off_square", "on_centre", "on_cross", "first_derivative"]]
