"""analysis.report.folder / analysis.report.figures / ``python -m analysis``: the cluster report end to end, the fit CLI and
resume, and bad input (exit 2 / exceptions naming the value, no output left behind).

Classifiers are trained here in seconds (small widths, few epochs) on synthetic DoG kernels, so nothing depends on the
bundled weights in analysis/weights.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.report import figures
from analysis.__main__ import main
from analysis.classify.autoencoder import AutoencoderConfig, fit_autoencoder
from analysis.classify.classifier import KernelClassifier
from analysis.classify.kmeans3 import fit_kmeans3
from analysis.core.labels import LABELS, families_for
from analysis.report.folder import KERNEL_COLUMNS, SHARE_COLUMNS, run_report
from analysis.core.synthetic import noisy_family_kernels

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--epochs", "2", "--widths", "16,16,8,8", "--batch-size", "64"]


def two_names(folder: Path) -> str:
    """An interval file naming both halves of code space: a 2-epoch toy autoencoder's own spectrum names no family,
    and fit refuses a classifier that names none."""
    path = folder / "two_names.json"
    path.write_text(json.dumps([{"lo": 0.0, "hi": 0.5, "name": "on_centre", "fine": "on_centre"},
                                {"lo": 0.5, "hi": 1.0, "name": "off_centre", "fine": "off_centre"}]))
    return str(path)


def synthetic(n_per_family: int, size: int, seed: int = 0) -> np.ndarray:
    return noisy_family_kernels(n_per_family, size, generator=torch.Generator().manual_seed(seed))[0].numpy()


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    """Classifiers for 3x3 (k-means), 5x5 and 7x7 (autoencoders, ~1 s each), saved as files."""
    folder = tmp_path_factory.mktemp("classifiers")
    for k in (5, 7):
        fit = fit_autoencoder(synthetic(200, k), AutoencoderConfig(size=k, widths=(128, 64, 32, 16), epochs=20,
                                                                   batch_size=64, patience=50), progress=False)
        KernelClassifier.from_autoencoder(fit.model).save(folder / f"classifier_k{k}.safetensors")
    fit_kmeans3(synthetic(40, 3)).save(folder / "classifier_k3.safetensors")
    return folder


@pytest.fixture(scope="module")
def kernel_files(tmp_path_factory):
    """Two 'models' as <model>_k<size>.npy files: alpha (5x5 + 7x7, two 7x7 layers, 3 zero kernels) and beta."""
    folder = tmp_path_factory.mktemp("kernels")
    a7 = synthetic(12, 7, seed=1)
    a7[[0, 5, 50]] = 0.0                                              # degenerate (pruned) channels
    np.save(folder / "alpha_k7.npy", a7)
    (folder / "alpha_k7.layers.json").write_text(json.dumps(
        [{"layer": "blocks.0.dw", "start": 0, "stop": 40}, {"layer": "blocks.1.dw", "start": 40, "stop": len(a7)}]))
    np.save(folder / "alpha_k5.npy", synthetic(6, 5, seed=2))
    np.save(folder / "beta_k7.npy", synthetic(5, 7, seed=3))
    np.save(folder / "gamma_k3.npy", synthetic(5, 3, seed=4))
    return folder


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000, path
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 300 < width < 5000 and 150 < height < 5000, (path, width, height)


def no_leftovers(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# ------------------------------------------------------------------------------------------------ report API
@pytest.mark.slow
def test_report_npy_files_consistent(kernel_files, clf_dir, tmp_path):
    files = sorted(kernel_files.glob("*.npy"))
    out = tmp_path / "rep"
    summary = run_report(files, out, [clf_dir / f"classifier_k{k}.safetensors" for k in (3, 5, 7)],
                         progress=False, log=lambda *a: None)
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert sorted(p.name for p in out.iterdir()) == summary["files"]
    assert [m["model"] for m in summary["models"]] == ["alpha", "beta", "gamma"]
    assert {(r["model"], r["size"]) for r in summary["rows"]} == {("alpha", 5), ("alpha", 7), ("beta", 7),
                                                                   ("gamma", 3)}
    for name in ("k7_spectrum", "k5_spectrum", "k3_centroids", "alpha_k7_pca", "alpha_k7_samples",
                 "alpha_k7_layers", "alpha_k7_activation", "beta_k7_pca", "alpha_k5_layers", "gamma_k3_samples"):
        check_png(out / f"{name}.png")

    table = {(r["model"], int(r["size"])): r for r in read_csv(out / "summary.csv")}
    for row in summary["rows"]:
        n = len(np.load(kernel_files / f"{row['model']}_k{row['size']}.npy"))
        assert row["n_kernels"] == n == sum(row["counts"].values())
        assert set(row["shares"]) == set(SHARE_COLUMNS)
        assert sum(row["shares"].values()) == pytest.approx(1.0)
        assert row["clustered_share"] == pytest.approx(sum(row["shares"][c] for c in LABELS[:-1]))
        csv_row = table[(row["model"], row["size"])]
        assert int(csv_row["n_kernels"]) == n and int(csv_row["n_degenerate"]) == row["n_degenerate"]
        assert sum(float(csv_row[c]) for c in SHARE_COLUMNS) == pytest.approx(1.0, abs=1e-5)
        per_kernel = [r for r in read_csv(out / f"k{row['size']}_kernels.csv") if r["model"] == row["model"]]
        assert len(per_kernel) == n
        for label in LABELS:
            assert sum(r["label"] == label and r["degenerate"] == "0" for r in per_kernel) == row["counts"][label]
    alpha7 = next(r for r in summary["rows"] if (r["model"], r["size"]) == ("alpha", 7))
    assert alpha7["n_degenerate"] == 3 and alpha7["n_layers"] == 2
    rows = read_csv(out / "k7_kernels.csv")
    assert tuple(rows[0]) == KERNEL_COLUMNS
    alpha_rows = [r for r in rows if r["model"] == "alpha"]
    assert [r["layer"] for r in alpha_rows[39:41]] == ["blocks.0.dw", "blocks.1.dw"]
    assert [r["index"] for r in alpha_rows[39:41]] == ["39", "0"]           # channel within its layer
    assert alpha_rows[5]["degenerate"] == "1" and alpha_rows[5]["label"] == "unclustered"
    assert alpha_rows[5]["dissimilarity"] == "nan"
    no_leftovers(tmp_path)


def test_report_skips_sizes_without_classifier(kernel_files, clf_dir, tmp_path, monkeypatch):
    def no_bundled(size=7):
        raise ValueError(f"no bundled classifier for {size}x{size} kernels")
    monkeypatch.setattr(KernelClassifier, "pretrained", staticmethod(no_bundled))
    messages = []
    files = [kernel_files / "alpha_k5.npy", kernel_files / "alpha_k7.npy"]
    summary = run_report(files, tmp_path / "rep", [clf_dir / "classifier_k7.safetensors"], progress=False,
                         log=messages.append)
    assert [s["size"] for s in summary["skipped"]] == [5]
    assert "no bundled classifier for 5x5" in summary["skipped"][0]["reason"]
    assert any("skipping 5x5" in m for m in messages)
    assert {r["size"] for r in summary["rows"]} == {7} and not (tmp_path / "rep" / "k5_kernels.csv").exists()
    # Every size skipped: an error, and no report folder.
    with pytest.raises(ValueError, match="no classifier for any kernel size"):
        run_report(files[:1], tmp_path / "none", progress=False, log=messages.append)
    assert not (tmp_path / "none").exists()


def test_report_bad_input_leaves_nothing(kernel_files, clf_dir, tmp_path, monkeypatch):
    clf7 = clf_dir / "classifier_k7.safetensors"
    good = kernel_files / "beta_k7.npy"
    out = tmp_path / "deep" / "rep"
    with pytest.raises(FileNotFoundError, match="missing_k7.npy"):
        run_report([good, tmp_path / "missing_k7.npy"], out, [clf7], progress=False)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        run_report(good, out, [tmp_path / "nope.safetensors"], progress=False)
    with pytest.raises(ValueError, match="is for 7x7 kernels but was given for size 5"):
        run_report(good, out, {5: clf7}, progress=False)
    assert not (tmp_path / "deep").exists()

    # A failure halfway (here: a figure) removes the partial report and the folders made for it.
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(figures, "plot_activation", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_report(good, out, [clf7], progress=False, log=lambda *a: None)
    assert not (tmp_path / "deep").exists()
    monkeypatch.undo()

    out = tmp_path / "rep"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        run_report(good, out, [clf7], progress=False)
    assert (out / "old.txt").exists()
    run_report(good, out, [clf7], overwrite=True, progress=False, log=lambda *a: None)
    assert not (out / "old.txt").exists() and (out / "summary.json").exists()
    no_leftovers(tmp_path)


def test_figures_reject_empty_input(tmp_path):
    empty = np.zeros((0, 7, 7), np.float32)
    for call in (lambda p: figures.plot_pca(empty, [], p), lambda p: figures.plot_samples(empty, [], p),
                 lambda p: figures.plot_activation(empty, [], p),
                 lambda p: figures.plot_layer_proportions([], [], [], p),
                 lambda p: figures.plot_pca(np.zeros((4, 7, 7), np.float32), ["unclustered"] * 4, p)):
        with pytest.raises(ValueError):
            call(tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
    assert set(LABELS) <= set(figures.PALETTE)


@pytest.mark.parametrize("n, shape", [(1, (1, 1)), (4, (1, 4)), (10, (3, 4)), (12, (3, 4))])
def test_panel_grid_wraps_many_panels_into_rows(n, shape):
    from analysis.report.style import panel_grid
    fig, axes = panel_grid(n, panel_size=(3.0, 2.0), ylabel="share")
    grid = fig.axes
    assert len(axes) == n and len(grid) == shape[0] * shape[1]
    assert [ax.get_visible() for ax in grid] == [True] * n + [False] * (len(grid) - n)
    assert [ax.get_ylabel() for ax in axes] == ["share" if i % shape[1] == 0 else "" for i in range(n)]
    assert tuple(fig.get_size_inches()) == pytest.approx((3.0 * shape[1] + 1.6, 2.0 * shape[0]))
    with pytest.raises(ValueError, match="n=0"):
        panel_grid(0, panel_size=(3.0, 2.0), ylabel="share")


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_report_tiny_timm_model(clf_dir, tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    import dog_init

    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False)
    dog_init.dog_init_(model, mix="paper", seed=0)       # DoG kernels, so some of them cluster
    ckpt = tmp_path / "atto.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    n_dw = sum(c.out_channels for _, c in dog_init.find_depthwise(model)[0])
    out = tmp_path / "rep"
    assert main(["report", "--model", "timm:convnext_atto", "--checkpoint", str(ckpt), "--out", str(out),
                 "--classifier", str(clf_dir / "classifier_k7.safetensors"), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["rows"]
    assert (row["model"], row["size"], row["n_kernels"], row["n_layers"]) == ("convnext_atto", 7, n_dw, 12)
    assert row["clustered_share"] > 0.2
    for name in ("spectrum", "pca", "samples", "layers", "activation"):
        check_png(out / f"k7_{name}.png")
    assert len(read_csv(out / "k7_kernels.csv")) == n_dw
    assert "convnext_atto" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["report", "--kernels", "{tmp}/missing_k7.npy", "--out", "{tmp}/o"], "missing_k7.npy"),
    (["report", "--model", "timm:convnxt_atto", "--out", "{tmp}/o"], "convnxt_atto"),
    (["report", "--model", "convnext_atto", "--out", "{tmp}/o"], "did you mean 'timm:convnext_atto'"),
    (["report", "--kernels", "{data}/beta_k7.npy", "--checkpoint", "{data}/beta_k7.npy", "--out", "{tmp}/o"],
     "--checkpoint needs --model"),
    (["report", "--kernels", "{data}/beta_k7.npy", "--out", "{tmp}/o", "--classifier", "{tmp}/c.safetensors"],
     "c.safetensors"),
    (["fit", "--kernels", "{data}/beta_k7.npy", "--size", "4", "--out", "{tmp}/o"], "'4'"),
    (["fit", "--kernels", "{data}/beta_k7.npy", "--size", "5", "--out", "{tmp}/o"], "sizes found"),
    (["fit", "--kernels", "{data}/beta_k7.npy", "--size", "7", "--widths", "8,8", "--out", "{tmp}/o"], "'8,8'"),
    (["fit", "--models", "timm:nosuchnet_xyz", "--size", "7", "--out", "{tmp}/o"], "nosuchnet_xyz"),
])
def test_cli_bad_input_exits_2(argv, needle, kernel_files, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, data=kernel_files) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_fit_autoencoder_and_kmeans(kernel_files, tmp_path, capsys):
    train = tmp_path / "train_k7.npy"
    np.save(train, synthetic(20, 7, seed=5))
    out = tmp_path / "fit"
    assert main(["fit", "--kernels", str(train), str(kernel_files / "alpha_k7.npy"), "--size", "7",
                 "--out", str(out), "--synthetic", "5", "--threshold", "0.25", "--intervals", two_names(tmp_path),
                 *TINY]) == 0
    clf = KernelClassifier.load(out / "classifier_k7.safetensors")
    assert (clf.size, clf.kind, clf.threshold) == (7, "autoencoder", 0.25)
    inputs = clf.meta["trained_on"]["inputs"]
    assert [i["n_kernels"] for i in inputs] == [160, 96] and inputs[1]["n_dropped_degenerate"] == 3
    assert clf.meta["trained_on"]["n_total"] == 160 + 93 + 5 * len(families_for(7))   # no squares at 7x7
    assert clf.classify(synthetic(2, 7)).labels.shape == (16,)
    printed = capsys.readouterr().out
    assert "intervals (code range -> name)" in printed and "[0.000," in printed

    out3 = tmp_path / "fit3"
    assert main(["fit", "--kernels", str(kernel_files / "gamma_k3.npy"), "--size", "3", "--out", str(out3),
                 "--synthetic", "10"]) == 0
    clf3 = KernelClassifier.load(out3)
    assert clf3.kind == "kmeans" and len(clf3.names) == 10

    capsys.readouterr()
    table = tmp_path / "gamma.csv"
    assert main(["classify", "--kernels", str(kernel_files / "gamma_k3.npy"), "--classifier", str(out3),
                 "--csv", str(table)]) == 0
    assert "gamma" in capsys.readouterr().out and len(read_csv(table)) == 40


def test_cli_fit_resume(tmp_path, monkeypatch, capsys):
    import analysis.classify.autoencoder as ae

    train = tmp_path / "train_k5.npy"
    np.save(train, synthetic(15, 5, seed=6))
    argv = ["fit", "--kernels", str(train), "--size", "5", "--epochs", "4", "--widths", "16,16,8,8",
            "--batch-size", "32", "--patience", "10", "--intervals", two_names(tmp_path)]
    assert main([*argv, "--out", str(tmp_path / "straight")]) == 0

    real_save = ae._save_state

    def interrupted(path, model, optimiser, schedule, result, *rest):
        real_save(path, model, optimiser, schedule, result, *rest)
        if len(result.history) == 2:
            raise RuntimeError("killed after epoch 2")
    monkeypatch.setattr(ae, "_save_state", interrupted)
    out = tmp_path / "resumed"
    assert main([*argv, "--out", str(out)]) == 1
    monkeypatch.undo()
    assert (out / "fit_state.pt").exists() and not (out / "classifier_k5.safetensors").exists()
    with pytest.raises(SystemExit) as exc:                  # an unfinished run is not silently discarded
        main([*argv, "--out", str(out)])
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err
    other = tmp_path / "other_k5.npy"
    np.save(other, synthetic(15, 5, seed=7))
    with pytest.raises(SystemExit) as exc:                  # resuming on different kernels is refused
        main([*argv[:2], str(other), *argv[3:], "--out", str(out), "--resume"])
    assert exc.value.code == 2 and "different kernels" in capsys.readouterr().err

    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    a = KernelClassifier.load(tmp_path / "straight" / "classifier_k5.safetensors")
    b = KernelClassifier.load(out / "classifier_k5.safetensors")
    assert b.meta["training"]["epochs_run"] == a.meta["training"]["epochs_run"] == 4
    for (name, x), (_, y) in zip(a.autoencoder.state_dict().items(), b.autoencoder.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name)


def test_report_with_bundled_classifier(kernel_files, tmp_path):
    try:
        KernelClassifier.pretrained(7)
    except (ValueError, FileNotFoundError) as err:
        pytest.skip(f"no bundled 7x7 classifier: {err}")
    summary = run_report(kernel_files / "beta_k7.npy", tmp_path / "rep", progress=False, log=lambda *a: None)
    assert summary["classifiers"][0]["origin"] == "pretrained"
