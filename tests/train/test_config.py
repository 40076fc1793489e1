"""The trainer's configuration: recipes, dotted overrides, and every refusal (named, before anything is written)."""
from pathlib import Path

import pytest

from train.__main__ import parse_args
from train.config import (Config, ConfigError, apply_overrides, describe, load_recipe, to_yaml, validate)
from train.data import balanced_subset, check_image_folder
from train.models import build_model, check_model_name
from train.run_folder import check_start
from tests.helpers.runs import ROOT, TINY, run_train

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def test_defaults_round_trip_through_yaml(tmp_path):
    path = tmp_path / "all.yaml"
    path.write_text(to_yaml(Config()))
    assert load_recipe(path) == Config()


def test_recipe_sets_only_what_differs_and_base_chains(tmp_path):
    (tmp_path / "a.yaml").write_text("optim: {lr: 0.5}\ndata: {batch_size: 8}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptim: {name: sgd}\n")
    cfg = load_recipe(tmp_path / "b.yaml")
    assert (cfg.optim.lr, cfg.optim.name, cfg.data.batch_size) == (0.5, "sgd", 8)
    assert cfg.model == Config().model


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(p.relative_to(ROOT / "recipes")) for p in RECIPES])
def test_every_recipe_loads_validates_and_opens_with_a_comment(recipe):
    cfg = validate(load_recipe(recipe))
    assert recipe.read_text().startswith("#"), "each recipe opens with what it reproduces, hardware, command"
    check_model_name(cfg.model.name)
    import torch

    from analysis.kernels.timm_models import create_model
    with torch.device("meta"):   # the architecture and its kwargs, without allocating the weights
        create_model(cfg.model.name, num_classes=10, **cfg.model.kwargs)


def test_overrides_are_typed():
    cfg = apply_overrides(Config(), [("optim.lr", "1e-2"), ("train.epochs", "3"), ("data.root", "2024"),
                                     ("init.mix", "{on_centre: 1, first_derivative: 2}"), ("init.seed", "null"),
                                     ("tracking.at_steps", "[5, 10]"), ("model.channels_last", "true"),
                                     ("init.scale", "0.5"), ("optim.weight_decay", "0")])
    assert cfg.optim.lr == 0.01 and cfg.train.epochs == 3 and cfg.data.root == "2024"
    assert cfg.init.mix == {"on_centre": 1, "first_derivative": 2} and cfg.init.seed is None
    assert cfg.tracking.at_steps == [5, 10] and cfg.model.channels_last is True
    assert cfg.init.scale == 0.5 and cfg.optim.weight_decay == 0.0


@pytest.mark.parametrize("pair, named", [
    (("optim.lrr", "1"), r"unknown key 'optim.lrr'.*valid keys of optim: name, lr, lr_base, lr_base_size"),
    (("optm.lr", "1"), r"unknown section 'optm'.*valid sections: model, init, data"),
    (("optim.lr", "fast"), r"optim.lr must be float, got 'fast'"),
    (("train.epochs", "2.5"), r"train.epochs must be int, got 2.5"),
    (("data.name", "lmdb"), r"data.name must be one of synthetic, imagefolder, ffcv, got 'lmdb'"),
    (("train.precision", "fp8"), r"train.precision must be one of no, bf16, fp16"),
    (("model.kwargs", "[1]"), r"model.kwargs must be dict"),
])
def test_bad_override_is_named(pair, named):
    with pytest.raises(ConfigError, match=named):
        apply_overrides(Config(), [pair])


@pytest.mark.parametrize("pair, named", [
    (("data.batch_size", "0"), "data.batch_size must be > 0"),
    (("optim.lr", "-1"), "optim.lr must be > 0"),
    (("data.crop_pct", "1.5"), "data.crop_pct must be in"),
    (("tracking.at_steps", "[0, 5]"), "tracking.at_steps must be a list of positive"),
    (("init.mix", "{on_centre: -1}"), "init: mix weight for 'on_centre' must be finite and >= 0"),
    (("init.mix", "papr"), "unknown mix preset 'papr'"),
    (("init.scale", "big"), "unknown scale 'big'"),
])
def test_meaningless_values_are_refused(pair, named):
    with pytest.raises(ConfigError, match=named):
        validate(apply_overrides(Config(), [pair]))


def test_fp16_needs_cuda():
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA present: fp16 is allowed")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        validate(apply_overrides(Config(), [("train.precision", "fp16")]))


def test_recipe_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lrr: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lrr' in recipe .*bad.yaml.*valid keys of optim"):
        load_recipe(bad)
    bad.write_text("optim: [1, 2]\n")
    with pytest.raises(ConfigError, match="section 'optim'.*must be a mapping"):
        load_recipe(bad)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_recipe(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


@pytest.mark.parametrize("argv, named", [
    (["--foo", "1"], "unknown option '--foo'"),
    (["--optim.lrr", "1"], "unknown key 'optim.lrr'"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--optim.lr"], "option --optim.lr needs a value"),
    (["--epoch", "3"], "unknown option '--epoch'"),
])
def test_cli_refusals_exit_2_naming_the_option(argv, named, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--config", str(TINY), *argv])
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


def test_cli_options_map_onto_the_config():
    args, cfg, _ = parse_args(["--config", str(TINY), "--epochs", "5", "--seed", "7", "--output-dir", "o",
                               "--optim.lr=0.1", "--model.name", "convmixer_256_8", "--resume", "auto"])
    assert (cfg.train.epochs, cfg.train.seed, cfg.train.output_dir, cfg.optim.lr) == (5, 7, "o", 0.1)
    assert cfg.model.name == "convmixer_256_8" and args.resume == "auto"


def test_help_lists_every_key_with_its_comment():
    text = describe()
    assert "--optim.lr 0.001   # peak learning rate" in text
    assert "--tracking.at_steps []" in text and "--init.profile null" in text


def test_unknown_model_gets_close_names():
    with pytest.raises(ConfigError, match=r"unknown timm model 'convmixr_768_32'; close names: convmixer_768_32"):
        check_model_name("convmixr_768_32")
    cfg = apply_overrides(load_recipe(TINY), [("model.kwargs", "{no_such_arg: 1}")])
    with pytest.raises(ConfigError, match="model.kwargs .* do not fit timm model 'convmixer_128_6'"):
        build_model(cfg, 10)


@pytest.mark.parametrize("option, named", [
    (("--optim.lrr", "1"), "unknown key 'optim.lrr'"),
    (("--optim.name", "adamx"), "optim.name 'adamx' is not a timm optimiser"),
    (("--schedule.name", "plateau"), "schedule.name must be one of cosine, tanh, step, multistep, poly, onecycle"),
    (("--optim.lr", ".inf"), "optim.lr must be a finite number, got inf"),
    (("--optim.weight_decay", ".nan"), "optim.weight_decay must be a finite number, got nan"),
    (("--optim.lr", "nan"), "optim.lr must be a finite number, got 'nan'"),
    (("--data.img_size", "1"), "data.img_size 1 does not fit model 'convmixer_128_6'"),
    (("--model.name", "resnet18", "--model.kwargs", "{}"), "ResNet has no depthwise nn.Conv2d"),
    (("--init.name", "bank"), "init.name bank needs init.source"),
    (("--init.source", "x.npy"), "init.source is for init.name bank or covariance"),
    (("--init.name", "bank", "--init.source", "missing.npy"), "init.source 'missing.npy' does not exist"),
    (("--init.name", "gaussian", "--init.kwargs", "{radius: 2}"), "do not fit init 'gaussian'"),
    (("--train.freeze_depthwise", "true", "--init.parameterise", "dog"), "train.freeze_depthwise keeps plain"),
    (("--augment.mixup", "0.8", "--data.batch_size", "15"), "data.batch_size 15 must be even"),
])
def test_refusals_leave_nothing_behind(tmp_path, option, named):
    out = tmp_path / "run"
    done = run_train("--config", TINY, "--output-dir", out, *option, check=False)
    assert done.returncode == 2 and named in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("where", ["/proc/dog-init-run", "under-a-file/run"])
def test_output_dir_that_cannot_be_made_is_refused_before_any_work(tmp_path, where):
    (tmp_path / "under-a-file").write_text("")
    out = where if where.startswith("/") else tmp_path / where
    done = run_train("--config", TINY, "--output-dir", out, check=False)
    assert done.returncode == 2 and "cannot be created or written" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "synthetic" not in done.stdout   # refused before the data were built


def test_missing_base_names_the_recipe_that_includes_it(tmp_path):
    (tmp_path / "child.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"child.yaml' names base: 'nowhere.yaml'.*does not exist"):
        load_recipe(tmp_path / "child.yaml")


def test_output_dir_holding_a_run_needs_resume(tmp_path):
    (tmp_path / "config.yaml").write_text("")   # a run that stopped before its first checkpoint: started again
    check_start(tmp_path, None)
    (tmp_path / "checkpoints" / "epoch_1").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"holds a run \(checkpoints\); pass --resume auto"):
        check_start(tmp_path, None)
    check_start(tmp_path, "auto")


def _folder(root: Path, layout: dict) -> Path:
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / cls / f"{i}.jpg").write_bytes(b"")
    return root


@pytest.mark.parametrize("layout, split, named", [
    ({}, "train", "does not exist"),
    ({"train": {"a": 1}}, "val", "has no split folder 'val'; it holds: train"),
    ({"train": {"a": 1, "b": 0}}, "train", "class folder .*b' holds no images"),
])
def test_image_folder_problems_are_named(tmp_path, layout, split, named):
    root = _folder(tmp_path / "data", layout) if layout else tmp_path / "missing"
    with pytest.raises(ConfigError, match=named):
        check_image_folder(str(root), split)


def test_split_without_classes(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(ConfigError, match="has no class folders"):
        check_image_folder(str(tmp_path), "val")


def test_balanced_subset_is_fixed_and_balanced():
    targets = [c for c in range(4) for _ in range(50)]
    a = balanced_subset(targets, 42, 4, seed=0, what="train")
    assert len(a) == 42 and [sum(targets[i] == c for i in a) for c in range(4)] == [11, 11, 10, 10]
    assert (a == balanced_subset(targets, 42, 4, seed=0, what="train")).all()
    assert not (a == balanced_subset(targets, 42, 4, seed=1, what="train")).all()
    with pytest.raises(ConfigError, match="needs 51 images of class 0 but it has 50"):
        balanced_subset(targets, 204, 4, seed=0, what="train")
