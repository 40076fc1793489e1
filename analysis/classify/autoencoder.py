"""The 1-D-code autoencoder of Sec. 3.2 and its trainer.

Input and output live in the (k^2 - 1)-dimensional basis of the zero-sum plane (``preprocess.to_basis``).
Encoder: 4 hidden Linear + LeakyReLU layers, then Linear -> 1 and a sigmoid, so every kernel gets a code in
(0, 1). Decoder: the mirror image (1 -> widths reversed), then Linear -> k^2 - 1 and tanh. Loss: the mean-centred
cosine dissimilarity ``1 - <x, x_hat> / (|x| |x_hat|)``; centring is implicit because basis coordinates are
zero-sum in pixel space, so this equals the cosine dissimilarity of the centred pixel kernels.

The trainer reads minibatches straight from the caller's (N, k, k) array through an index vector (which may repeat
rows to up-weight a source), so it never copies the kernel array: 1,000,000 7x7 kernels cost their own 196 MB.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.preprocess import basis, check_kernels

__all__ = ["AutoencoderConfig", "KernelAutoencoder", "cosine_dissimilarity", "fit_autoencoder", "FitResult",
           "batch_to_basis"]


@dataclass
class AutoencoderConfig:
    size: int = 7                                   # kernel size k; input dim is k*k - 1
    widths: tuple[int, ...] = (512, 256, 128, 64)   # encoder hidden widths; the decoder mirrors them
    negative_slope: float = 0.01                    # LeakyReLU slope
    lr: float = 1e-3                                # Adam learning rate, cosine-annealed to lr / 100 over epochs
    batch_size: int = 1024
    epochs: int = 60                                # upper bound; early stopping usually ends sooner
    patience: int = 6                               # epochs without held-out improvement before stopping
    min_delta: float = 1e-4                         # improvement that counts, in loss units
    val_fraction: float = 0.1                       # held-out share of the (unique) kernels
    warmup_epochs: int = 0                          # epochs fitted to given code targets first (0: the paper's plain AE)
    anchor_weight: float = 0.0                      # weight of MSE(code, target) in the main phase, rows with targets
    seed: int = 0
    device: str = "auto"                            # "auto" (cuda if available), "cpu", "cuda", ...

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"widths must be 4 positive hidden sizes (the paper's 4 layers), got {self.widths}")
        if self.size < 3 or self.size % 2 == 0:
            raise ValueError(f"size must be an odd integer >= 3, got {self.size}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")


def _mlp(sizes: list[int], slope: float) -> list[nn.Module]:
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(slope)]
    return layers + [nn.Linear(sizes[-2], sizes[-1])]


class KernelAutoencoder(nn.Module):
    def __init__(self, size: int = 7, widths=(512, 256, 128, 64), negative_slope: float = 0.01):
        super().__init__()
        dim = size * size - 1
        self.size, self.widths = size, tuple(widths)
        self.encoder = nn.Sequential(*_mlp([dim, *widths, 1], negative_slope), nn.Sigmoid())
        self.decoder = nn.Sequential(*_mlp([1, *reversed(widths), dim], negative_slope), nn.Tanh())

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, k*k - 1) -> codes (N,) in (0, 1)."""
        return self.encoder(coords).squeeze(1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (N,) -> basis coordinates (N, k*k - 1), not normalised."""
        return self.decoder(codes.view(-1, 1))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(coords))


def cosine_dissimilarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row ``1 - cos(x, y)``; rows are basis coordinates, hence already mean-centred in pixel space."""
    return 1 - nn.functional.cosine_similarity(x, y, dim=1, eps=1e-8)


def batch_to_basis(batch: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Centre and unit-normalise a (B, k, k) batch and write it in basis ``b`` (k^2, k^2 - 1), in torch."""
    flat = batch.reshape(len(batch), -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return flat @ b


@dataclass
class FitResult:
    model: KernelAutoencoder
    config: AutoencoderConfig
    history: list[dict] = field(default_factory=list)   # per epoch: train_loss, val_loss
    warmup: list[dict] = field(default_factory=list)    # per warm-up epoch: train_loss
    best_val_loss: float = math.inf
    epochs_run: int = 0

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "history": self.history, "warmup": self.warmup,
                "best_val_loss": self.best_val_loss,
                "epochs_run": self.epochs_run}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _loss(model, kernels: np.ndarray, index: np.ndarray, b, device, batch_size: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(index), batch_size):
            batch = torch.from_numpy(kernels[np.sort(index[start:start + batch_size])]).to(device)
            x = batch_to_basis(batch, b)
            total += cosine_dissimilarity(model(x), x).sum().item()
    return total / max(len(index), 1)


def fit_autoencoder(kernels, config: AutoencoderConfig | None = None, *, index=None, code_targets=None,
                    state_path: str | Path | None = None, progress: bool = True) -> FitResult:
    """Train a ``KernelAutoencoder`` on ``kernels`` (N, k, k); degenerate kernels must be filtered out first.

    index: optional int array of rows to train on, repeats allowed (to up-weight a source); the held-out split is
        taken over the unique rows, so a repeated kernel never sits on both sides.
    code_targets: optional (N,) codes in [0, 1] (NaN where unknown) for ``config.warmup_epochs`` epochs of warm-up,
        in which the encoder is pulled toward the targets and the decoder reconstructs from them (recorded in
        ``FitResult.warmup``), and, with ``config.anchor_weight > 0``, for a ``anchor_weight * MSE(code, target)``
        term beside the paper's loss afterwards. It lays known subtypes out along the code axis so that none is
        left without a segment of the curve; rows without a target (real kernels) are placed freely.
    state_path: if given, the full training state (model, optimiser, history, RNG) is written there atomically
        after each epoch, and a run that finds it resumes from it.
    """
    config = config or AutoencoderConfig(size=int(np.shape(kernels)[-1]))
    kernels = check_kernels(kernels)
    if kernels.shape[-1] != config.size:
        raise ValueError(f"kernels are {kernels.shape[-1]}x{kernels.shape[-1]} but config.size is {config.size}")
    index = np.arange(len(kernels)) if index is None else np.asarray(index, dtype=np.int64)
    unique = np.unique(index)
    if len(unique) < 10:
        raise ValueError(f"need at least 10 distinct kernels to train, got {len(unique)}")
    rng = np.random.default_rng(config.seed)
    held = set(rng.choice(unique, size=max(1, int(len(unique) * config.val_fraction)), replace=False).tolist())
    held_mask = np.isin(index, list(held))
    val_index, train_index = np.unique(index[held_mask]), index[~held_mask]

    device = _device(config.device)
    torch.manual_seed(config.seed)
    model = KernelAutoencoder(config.size, config.widths, config.negative_slope).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.epochs, eta_min=config.lr / 100)
    b = torch.from_numpy(np.array(basis(config.size))).to(device)
    result = FitResult(model, config)
    best_state, stale, start_epoch = None, 0, 0
    state_path = Path(state_path) if state_path else None
    if state_path and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["config"] != asdict(config):
            raise ValueError(f"{state_path} was written with a different config; delete it or use the same one")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        result.history, result.best_val_loss = state["history"], state["best_val_loss"]
        best_state, stale, start_epoch = state["best_model"], state["stale"], len(state["history"])
        rng.bit_generator.state = state["rng"]
    anchors = None
    if code_targets is not None:
        code_targets = np.asarray(code_targets, dtype=np.float32)
        if code_targets.shape != (len(kernels),):
            raise ValueError(f"code_targets must have shape ({len(kernels)},), got {code_targets.shape}")
        anchors = code_targets if config.anchor_weight > 0 else None
    if code_targets is not None and config.warmup_epochs and start_epoch == 0:
        _warm_up(model, kernels, code_targets, config, b, device, rng, result, progress)
    epochs = tqdm(range(start_epoch, config.epochs), desc=f"autoencoder k={config.size}", disable=not progress,
                  initial=start_epoch, total=config.epochs)
    for epoch in epochs:
        if stale >= config.patience:
            break
        model.train()
        order = rng.permutation(train_index)
        running, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            rows = np.sort(order[start:start + config.batch_size])
            x = batch_to_basis(torch.from_numpy(kernels[rows]).to(device), b)
            code = model.encode(x)
            loss = cosine_dissimilarity(model.decode(code), x).mean()
            if anchors is not None:
                t = torch.from_numpy(anchors[rows]).to(device)
                known = torch.isfinite(t)
                if bool(known.any()):
                    loss = loss + config.anchor_weight * nn.functional.mse_loss(code[known], t[known])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            running += loss.item() * len(rows)
            seen += len(rows)
        schedule.step()
        val = _loss(model, kernels, val_index, b, device, 8192)
        result.history.append({"epoch": epoch + 1, "train_loss": running / seen, "val_loss": val})
        if val < result.best_val_loss - config.min_delta:
            result.best_val_loss, stale = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        epochs.set_postfix(train=f"{running / seen:.4f}", val=f"{val:.4f}", best=f"{result.best_val_loss:.4f}")
        if state_path:
            _save_state(state_path, model, optimiser, schedule, result, best_state, stale, rng, config)
    if best_state is not None:
        model.load_state_dict(best_state)
    result.epochs_run = len(result.history)
    model.eval()
    return result


def _warm_up(model, kernels, targets, config, b, device, rng, result, progress) -> None:
    """Fit encoder and decoder to known codes: MSE(code, target) + cos loss of decode(target) and of the AE."""
    rows = np.flatnonzero(np.isfinite(targets))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    for epoch in tqdm(range(config.warmup_epochs), desc=f"warm-up k={config.size}", disable=not progress):
        running = 0.0
        order = rng.permutation(rows)
        for start in range(0, len(order), config.batch_size):
            batch = np.sort(order[start:start + config.batch_size])
            x = batch_to_basis(torch.from_numpy(kernels[batch]).to(device), b)
            t = torch.from_numpy(targets[batch]).to(device)
            code = model.encode(x)
            loss = (cosine_dissimilarity(model.decode(t), x).mean()
                    + cosine_dissimilarity(model.decode(code), x).mean() + 10 * nn.functional.mse_loss(code, t))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            running += loss.item() * len(batch)
        result.warmup.append({"epoch": epoch + 1, "train_loss": running / len(rows)})


def _save_state(path: Path, model, optimiser, schedule, result, best_state, stale, rng, config) -> None:
    from dog_init.files import atomic_path

    state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
             "schedule": schedule.state_dict(), "history": result.history,
             "best_val_loss": result.best_val_loss, "best_model": best_state, "stale": stale,
             "rng": rng.bit_generator.state, "config": asdict(config)}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
