"""The DoG-formula fit: each kernel fitted by every family's closed form (``fitting``: ``fit_families``), over the
parameter spaces of ``_spaces``."""
