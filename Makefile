# Set-up and checks. `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test classifiers evidence bench clean

install: $(STAMP)

# ffcv is optional; it needs system libraries, which we can only install as root with apt.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libopencv-dev libturbojpeg0-dev >/dev/null \
	   && $(PIP) install --quiet -e '.[ffcv,dev]') \
	  || echo "warning: optional ffcv extra could not be installed; the torchvision data path still works"; \
	fi
	touch $(STAMP)

demo: install
	$(PY) -m dog_init preview --mix paper --size 7 --n 64 --seed 0 --out demo/kernels.png
	$(PY) -m dog_init init --model convmixer_768_32 --mix paper --seed 0 \
	  --report demo/convmixer_init.json --preview demo/convmixer_layer0.png

# The bundled classifiers in analysis/weights (needs ../shared/data/kernels; about 21 min on 2 CPU cores).
classifiers: install
	$(PY) -m analysis.bundle --sizes 3 5 7

# The README's evidence: the bundled classifiers on the real kernels of ../shared/data/kernels.
SHARED_KERNELS ?= ../shared/data/kernels
evidence: install
	$(PY) -m analysis report --kernels $(SHARED_KERNELS)/*.npy --out docs/evidence --overwrite --quiet

test: install
	$(PY) -m pytest -q -n 2

bench: install
	$(PY) benchmarks/init_speed.py --quick
	$(PY) benchmarks/classifier.py --quick

clean:
	rm -rf $(VENV) demo .pytest_cache
