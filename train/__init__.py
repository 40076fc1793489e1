"""train: timm models with default or DoG initialisation, through Hugging Face Accelerate, with a census of the
depthwise kernels' clusters at every epoch (Babaiee et al., ICLR 2024, Appendices F-H).

    python -m train --config recipes/demo.yaml [--SECTION.KEY VALUE ...]

``config`` (the dataclass tree, recipes, overrides), ``data`` (a package: ImageFolder, FFCV, synthetic; the FFCV
writer behind ``python -m train.write_ffcv``), ``models`` (timm + dog_init), ``optim`` (timm optimisers and schedules,
ConvMixer's one-cycle), ``engine`` (train_one_epoch / evaluate), ``checkpoint`` (atomic, verified, resumable),
``tracking`` (census, TensorBoard), ``jsonl`` (census.jsonl / metrics.jsonl), ``trainer`` (the run), ``census`` /
``timeline`` / ``results`` (after the run).
"""
__all__ = ["fit"]


def __getattr__(name: str):
    # Lazy: ``python -m train.timeline`` and friends should not pay for importing Accelerate.
    if name == "fit":
        from .trainer import fit
        return fit
    raise AttributeError(f"module 'train' has no attribute {name!r}")
