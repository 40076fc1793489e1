"""Helpers the tests share, imported as ``tests.helpers.X`` (fixtures live in tests/conftest.py).

=====================  ==========================================================================================
module                 what
=====================  ==========================================================================================
runs                   ``python -m train`` (or another module) in a subprocess; what a run folder holds
dog_init_cli           ``python -m dog_init`` in a subprocess; PNG checks
inits                  small depthwise models and checks shared by the initialiser tests
files                  folder listings, strict JSON, small depthwise state dicts
outside_kernels        labelled kernels from a generator that shares nothing with ``dog_init.families``
ddp_dogconv            a script run under ``torchrun`` by tests/dog_init/test_dogconv_convert.py
=====================  ==========================================================================================
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]      # the repository
DATA = ROOT / "tests" / "data"                  # files the tests read: tiny.yaml, seeded_reference.npz
