"""The look every figure shares: one colour per family, readable names, and the PNG writer.

Torch-free on purpose (matplotlib and the file layer only), so that drawing a timeline of a finished run
(``python -m train.timeline``) needs neither torch nor scikit-learn.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from dog_init.files import atomic_path  # noqa: E402

__all__ = ["PALETTE", "DEGENERATE", "colour", "pretty", "panel_grid", "save_figure"]

DEGENERATE = "degenerate"   # = core.labels.DEGENERATE (checked in figures; core.labels needs torch)
DPI = 120
# Fixed per family so a colour means the same thing in every figure (keys: the labels of ``core.labels``, checked
# there). On/off pairs share a hue family where it helps (on centre red / off centre blue, like the kernels
# themselves); grey shades are the non-families: "other", "unclustered" and degenerate kernels.
PALETTE: dict[str, str] = {
    "on_centre": "#d62728", "off_centre": "#1f77b4", "on_cross": "#ff7f0e", "off_cross": "#17becf",
    "first_derivative": "#2ca02c", "second_derivative": "#9467bd", "on_square": "#8c564b",
    "off_square": "#e377c2", "other": "#6f6f6f", "unclustered": "#cfcfcf", DEGENERATE: "#222222",
}


def colour(label: str) -> str:
    """Colour of a coarse label (a fine label ``family/subtype`` takes its family's colour)."""
    return PALETTE.get(str(label).split("/")[0], PALETTE["other"])


def pretty(label: str) -> str:
    return str(label).replace("_", " ")


def panel_grid(n: int, *, panel_size: tuple[float, float], ylabel: str, legend_width: float = 1.6,
               columns: int = 4):
    """``n`` panels (``panel_size`` inches each) in rows of at most ``columns`` (a dozen arms side by side would
    be unreadable), y shared and labelled at each row's start, room on the right for a figure legend.

    Returns the figure and the ``n`` axes in reading order; the unused cells of the last row are hidden.
    """
    if n < 1:
        raise ValueError(f"panel_grid needs at least one panel, got n={n}")
    columns = min(n, columns)
    rows = -(-n // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(panel_size[0] * columns + legend_width, panel_size[1] * rows),
                             sharey=True, squeeze=False)
    cells = list(grid.flat)
    for row in grid:
        row[0].set_ylabel(ylabel)
    for ax in cells[n:]:
        ax.set_visible(False)
    return fig, cells[:n]


def save_figure(fig, path, *, dpi: int = DPI, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (never a truncated file) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path
