"""The initialiser registry: get_init / list_inits / register_init, the baselines that leave a model as built, and
every registered initialiser taking dog_init_'s call shape."""
from __future__ import annotations

import copy

import pytest

import dog_init
from dog_init import bank_init_, box_init_, covariance_init_, dog_init_, gaussian_init_, get_init, impulse_init_
from tests.helpers.inits import PUBLISHED, UserNet, assert_untouched, dw_net, init_with


def test_registry_dog():
    """get_init('dog') is dog_init_; the registry lists the built-in names."""
    assert get_init("dog") is dog_init_
    assert {"dog", "default", "kaiming"} <= set(dog_init.list_inits())


def test_list_inits_has_all_eight():
    assert set(dog_init.list_inits()) >= {"default", "kaiming", "dog", "covariance", "impulse", "box", "gaussian",
                                          "bank"}
    assert get_init("covariance") is covariance_init_ and get_init("bank") is bank_init_
    assert get_init("impulse") is impulse_init_ and get_init("box") is box_init_
    assert get_init("gaussian") is gaussian_init_


@pytest.mark.parametrize("name", PUBLISHED)
def test_registry_entries_take_the_dog_call_shape(name):
    model = dw_net()
    report = init_with(name, model, scale="default", include=None, exclude=None, seed=3)
    assert isinstance(report, dog_init.InitReport) and report.seed == 3 and report.scale == "default"
    assert [layer.name for layer in report.layers] == ["1", "2"]
    assert all(len(layer.families) == 8 for layer in report.layers)
    assert report.summary() and report.to_dict()["layers"][0]["families"]


def test_bank_needs_a_source():
    with pytest.raises(ValueError, match=r"source="):
        get_init("bank")(dw_net())


@pytest.mark.parametrize("name", ["default", "kaiming"])
def test_registry_baselines_leave_model(name):
    """'default' and 'kaiming' leave the model bit-identical (the constructor's init is the baseline)."""
    model = UserNet()
    before = copy.deepcopy(model)
    get_init(name)(model, mix="paper", seed=0)
    assert_untouched(model, before)


def test_registry_callable_and_unknown():
    """A callable passes through; an unknown name raises ValueError listing the allowed names."""
    def mine(model, **kwargs):
        return None
    assert get_init(mine) is mine
    with pytest.raises(ValueError) as info:
        get_init("xavier_dog")
    message = str(info.value)
    assert "xavier_dog" in message
    for name in dog_init.list_inits():
        assert name in message


def test_register_duplicate():
    """Registering a taken name raises ValueError; a new name can be registered and fetched."""
    with pytest.raises(ValueError, match="dog"):
        dog_init.register_init("dog", lambda model, **kw: None)
    assert get_init("dog") is dog_init_
    name = "test_registry_tmp_init"
    if name not in dog_init.list_inits():
        fn = dog_init.register_init(name, lambda model, **kw: None)
        assert get_init(name) is fn
        with pytest.raises(ValueError, match=name):
            dog_init.register_init(name, fn)
