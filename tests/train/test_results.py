"""``python -m train.results LABEL=RUN1,RUN2 ... --out FOLDER``: settings compared over seeds. The arms are copies of
the session's ``tiny_run`` (config.yaml, metrics.jsonl and census.jsonl only: no checkpoint is needed), one of them
given another seed, other top-1 values and another final clustered share, so that means and standard deviations
over seeds are known exactly; bad arguments exit 2 naming the culprit before anything is written."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tests.helpers.dog_init_cli import PNG_SIGNATURE
from tests.helpers.runs import census, metrics, run_train

TOP1_SHIFT = 2.0          # the second seed's top-1, every epoch, minus the first seed's
CLUSTERED_SHIFT = 0.1     # the second seed's final clustered share minus the first seed's
FIGURES = ("timeline.png", "accuracy.png", "layers.png")


def _write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _arm(tiny_run: Path, dest: Path, seed: int = 0, top1_shift: float = 0.0, clustered_shift: float = 0.0) -> Path:
    """A copy of the run's logs as run ``seed``, its top-1 and last epoch census moved by the given amounts."""
    from train.config import apply_overrides, load_recipe, to_yaml

    dest.mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl", "census.jsonl"):
        shutil.copy2(tiny_run / name, dest / name)
    (dest / "config.yaml").write_text(to_yaml(apply_overrides(load_recipe(dest / "config.yaml"),
                                                              [("train.seed", str(seed))])))
    _write_lines(dest / "metrics.jsonl", [{**row, "top1": row["top1"] + top1_shift}
                                          for row in metrics(dest, timing=True)])
    lines = census(dest)
    lines[-1] = {**lines[-1], "clustered": lines[-1]["clustered"] + clustered_shift}
    _write_lines(dest / "census.jsonl", lines)
    return dest


@pytest.fixture(scope="module")
def arms(tiny_run, tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("arms")
    return {"dog": [_arm(tiny_run, root / "dog_s0"),
                    _arm(tiny_run, root / "dog_s1", seed=1, top1_shift=TOP1_SHIFT, clustered_shift=CLUSTERED_SHIFT)],
            "plain": [_arm(tiny_run, root / "plain_s0")]}


@pytest.fixture(scope="module")
def results(arms, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results") / "out"
    done = run_train(*(f"{label}={','.join(map(str, runs))}" for label, runs in arms.items()), "--out", out,
                     module="train.results")
    assert "| epoch |" in done.stdout and f"wrote {out}/results.md" in done.stdout
    return out


def test_results_json_holds_means_and_stds_over_seeds(tiny_run, arms, results):
    summary = json.loads((results / "results.json").read_text())
    assert list(summary) == ["dog", "plain"]
    dog, plain = summary["dog"], summary["plain"]
    assert dog["runs"] == [str(r) for r in arms["dog"]] and dog["seeds"] == [0, 1] and plain["seeds"] == [0]
    rows = metrics(tiny_run, timing=True)
    assert dog["epochs"] == plain["epochs"] == len(rows) == 2
    spread = math.sqrt(TOP1_SHIFT ** 2 / 2)          # the sample std (ddof=1) of x and x + shift
    for e, row in enumerate(rows):                   # one (mean, std) pair per epoch
        assert dog["top1"][e] == pytest.approx([row["top1"] + TOP1_SHIFT / 2, spread])
        assert plain["top1"][e] == pytest.approx([row["top1"], 0.0])
        assert dog["top5"][e] == pytest.approx([row["top5"], 0.0])
    first, last = census(tiny_run)[0], census(tiny_run)[-1]
    assert dog["final_epoch"] == last["epoch"] == 2
    assert dog["clustered_initial"] == pytest.approx([first["clustered"], 0.0])
    assert dog["clustered"] == pytest.approx([last["clustered"] + CLUSTERED_SHIFT / 2,
                                              math.sqrt(CLUSTERED_SHIFT ** 2 / 2)])
    assert plain["clustered"] == pytest.approx([last["clustered"], 0.0])
    for family, (mean, std) in dog["families"].items():
        assert mean == pytest.approx(last["families"].get(family, 0.0)) and std == pytest.approx(0.0), family
    assert [layer["name"] for layer in dog["layers"]] == [layer["name"] for layer in last["layers"]]
    assert dog["minutes"] == pytest.approx(sum(r["epoch_seconds"] for r in rows) / 60)
    assert dog["dogconv_agreement"] is None          # plain convs, not DoGConv2d
    import timm

    import analysis.kernels.timm_models  # noqa: F401  (registers convmixer_128_6)
    from dog_init import depthwise_stats
    model = timm.create_model("convmixer_128_6", dim=32, depth=2, kernel_size=7, patch_size=2, num_classes=10)
    assert dog["depthwise_params"] == plain["depthwise_params"] == depthwise_stats(model)["depthwise_params"]


def test_results_md_tables_figures_and_copied_logs(tiny_run, arms, results):
    text = (results / "results.md").read_text()
    rows = metrics(tiny_run, timing=True)
    assert "| epoch | dog top-1 % | plain top-1 % |" in text
    for e, row in enumerate(rows, 1):               # one row per epoch: mean ± std of each setting
        assert f"| {e} | {row['top1'] + 1:.1f} ± 1.4 | {row['top1']:.1f} ± 0.0 |" in text
    settings = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
                if line.startswith(("| dog |", "| plain |"))}
    assert set(settings) == {"dog", "plain"}
    last = census(tiny_run)[-1]
    assert settings["dog"].startswith(f"| dog | 0, 1 | {rows[-1]['top1'] + 1:.1f} ± 1.4 | ")
    assert f"| {100 * (last['clustered'] + CLUSTERED_SHIFT / 2):.1f} ± 7.1 |" in settings["dog"]
    assert settings["plain"].startswith(f"| plain | 0 | {rows[-1]['top1']:.1f} ± 0.0 | ")
    minutes = sum(r["epoch_seconds"] for r in rows) / 60
    summary = json.loads((results / "results.json").read_text())
    # depthwise parameters, no DoGConv2d agreement (plain convs), minutes per run
    assert settings["dog"].endswith(f" | {summary['dog']['depthwise_params']} | - | {minutes:.0f} |")
    for name in FIGURES:
        assert (results / name).read_bytes()[:8] == PNG_SIGNATURE, name
    for runs in arms.values():                       # each run's logs, to redraw the figures without checkpoints
        for run in runs:
            for name in ("config.yaml", "metrics.jsonl", "census.jsonl"):
                assert (results / "runs" / run.name / name).read_bytes() == (run / name).read_bytes()
    assert sorted(p.name for p in results.iterdir()) == sorted(["results.json", "results.md", "runs", *FIGURES])


@pytest.mark.parametrize("case", ["missing folder", "group without runs", "label twice", "no census"])
def test_bad_arguments_exit_2_naming_them_before_writing(arms, tmp_path, case):
    out = tmp_path / "out"
    good = ",".join(map(str, arms["dog"]))
    missing = tmp_path / "missing"
    no_census = tmp_path / "no_census"
    if case == "no census":
        shutil.copytree(arms["plain"][0], no_census)
        (no_census / "census.jsonl").unlink()
    argv, named = {
        "missing folder": ([f"dog={good},{missing}"], f"'{missing}' has no metrics.jsonl"),
        "group without runs": ([f"dog={good}", "plain="], "no run folders in 'plain='"),
        "label twice": ([f"dog={good}", f"dog={arms['plain'][0]}"], "label 'dog' is used twice"),
        "no census": ([f"dog={good}", f"plain={no_census}"], f"'{no_census}' has no census.jsonl"),
    }[case]
    done = run_train(*argv, "--out", out, module="train.results", check=False)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not out.exists(), "nothing may be written before every argument is checked"
