"""One census loop for every caller: the trainer's census, ``python -m analysis report | classify | profile``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from analysis import ClassifierChoice, extract_depthwise, take_census
from dog_init import dog_init_


def _two_sizes() -> nn.Module:
    """Depthwise convs of 3x3, 9x9 and 4x4 (even: no classifier) in one model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 16, 9, padding=4, groups=16),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 16, 4, padding="same", groups=16))
    dog_init_(model, "paper", seed=0)
    return model


def test_sizes_are_classified_or_skipped_by_one_rule(pretrained_classifier):
    logged = []
    choice = ClassifierChoice(log=logged.append)
    census = take_census(extract_depthwise(_two_sizes()), choice)
    assert list(census.sizes) == [3, 9]
    assert [layer.name for layer in census.layers] == ["0", "1", "2"]     # model order, classified layers
    assert [layer.kernel_size for layer in census.layers] == [3, 9, 3]
    assert [(s["size"], s["n_kernels"]) for s in census.skipped] == [(4, 16)]
    take_census(extract_depthwise(_two_sizes()), choice)
    assert len(logged) == 1 and "4x4" in logged[0]                       # reported once per choice
    want = pretrained_classifier(3).classify(extract_depthwise(_two_sizes())[3].kernels)
    np.testing.assert_array_equal(np.concatenate([census.layers[0].labels, census.layers[2].labels]),
                                  np.where(want.degenerate, "degenerate", want.labels))


def test_the_trainer_census_goes_through_the_same_loop():
    from train.census import Census
    record = Census(log=lambda message: None).measure(_two_sizes()).record
    assert [layer["kernel_size"] for layer in record["layers"]] == [3, 9, 3]
    assert record["skipped_sizes"] == {"4": 16} and record["kernels"] == 48
    assert set(record["sizes"]) == {"3", "9"} and record["sizes"]["9"]["kernels"] == 16


def test_a_given_classifier_for_an_absent_size_is_an_error(pretrained_classifier):
    choice = ClassifierChoice({7: pretrained_classifier(7)})
    with pytest.raises(ValueError, match="is for 7x7 kernels, but the kernels are 3x3, 9x9"):
        choice.check_used(extract_depthwise(_two_sizes()).sizes)
