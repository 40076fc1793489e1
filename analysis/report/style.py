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

__all__ = ["PALETTE", "DEGENERATE", "colour", "pretty", "panel_grid", "legend_beside", "save_figure"]

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


LEGEND_WIDTH = 1.6   # inches kept right of a panel grid for its figure legend


def panel_grid(n: int, *, panel_size: tuple[float, float], ylabel: str, columns: int = 4):
    """``n`` panels (``panel_size`` inches each) in rows of at most ``columns`` (a dozen arms side by side would
    be unreadable), y shared and labelled at each row's start, ``LEGEND_WIDTH`` inches on the right for the
    figure legend that `legend_beside` draws.

    Returns the figure and the ``n`` axes in reading order; the unused cells of the last row are hidden.
    """
    if n < 1:
        raise ValueError(f"panel_grid needs at least one panel, got n={n}")
    columns = min(n, columns)
    rows = -(-n // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(panel_size[0] * columns + LEGEND_WIDTH, panel_size[1] * rows),
                             sharey=True, squeeze=False)
    cells = list(grid.flat)
    for row in grid:
        row[0].set_ylabel(ylabel)
    for ax in cells[n:]:
        ax.set_visible(False)
    return fig, cells[:n]


def legend_beside(fig, **legend_kwargs) -> None:
    """Draw ``fig``'s legend in the room `panel_grid` kept on the right and lay the panels out left of it
    (call it last, after the suptitle, so the layout sees every element)."""
    fig.legend(loc="center right", fontsize=8, frameon=False, **legend_kwargs)
    fig.tight_layout(rect=(0, 0, 1 - LEGEND_WIDTH / fig.get_figwidth(), 1))


def save_figure(fig, path, *, dpi: int = DPI, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (never a truncated file) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path
