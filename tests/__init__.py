"""The test suite, laid out like the code.

* ``tests/dog_init/``, ``tests/analysis/``, ``tests/train/``: the tests of each package, one file per subject.
* ``tests/test_layers.py``, ``tests/test_docs.py``: cross-cutting checks (the layering and packaging, the docs).
* ``tests/helpers/``: code the tests share (``from tests.helpers.runs import run_train``); ``tests/conftest.py``:
  the shared fixtures (``tiny_run``, ``pretrained_classifier``, ``shared_data``, ``shared_kernel``, ``cifar_zip``).
* ``tests/data/``: small files the tests read.

Every folder is a package (it has an ``__init__.py``), so test modules in different folders may share a name and
pytest puts the repository root, not a test folder, on ``sys.path``.
"""
