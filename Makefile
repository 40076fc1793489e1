# Set-up and checks. `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test classifiers evidence fit-evidence bench clean cifar-data cifar-runs cifar-experiment

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

# The README's fit figures (issue 9): the same report with --fit; docs/fit keeps the fit's figures and summary.json
# (agreement with the autoencoder per file), the whole report (per-kernel CSVs included) stays in build/fit-evidence.
# The EfficientNet-Lite0 files carry no layer table; docs/layers has one from the architecture (16 blocks'
# depthwise channel counts, which sum exactly to the files' rows), staged beside links to the shared files.
fit-evidence: install
	rm -rf build/fit-kernels && mkdir -p build/fit-kernels
	ln -s $(abspath $(SHARED_KERNELS))/* build/fit-kernels/
	cp docs/layers/*.layers.json build/fit-kernels/
	$(PY) -m analysis report --kernels build/fit-kernels/*.npy --out build/fit-evidence --overwrite --quiet --fit
	rm -rf docs/fit.partial && mkdir -p docs/fit.partial
	cp build/fit-evidence/*_fit_*.png build/fit-evidence/summary.json docs/fit.partial/
	rm -rf docs/fit && mv docs/fit.partial docs/fit

# CIFAR-10 from ../shared/data, unpacked for torchvision's ImageFolder (data/ is git-ignored).
SHARED_DATA ?= ../shared/data
data/cifar10/train:
	test -f $(SHARED_DATA)/cifar10-jpeg.zip || (echo "$(SHARED_DATA)/cifar10-jpeg.zip not found; set SHARED_DATA" && false)
	mkdir -p data && cd data && unzip -q -o $(abspath $(SHARED_DATA))/cifar10-jpeg.zip
cifar-data: data/cifar10/train

# The README's Results: default vs DoG init on CIFAR-10, 3 seeds each (recipes/cifar10_cpu; ~2 h on 2 idle cores).
# Every run resumes where it stopped (--resume auto), so the target can be interrupted and rerun.
CIFAR_SEEDS ?= 0 1 2
CIFAR_ARMS  ?= default dog
cifar-runs: install cifar-data
	for seed in $(CIFAR_SEEDS); do for arm in $(CIFAR_ARMS); do \
	  $(PY) -m train --config recipes/cifar10_cpu/$$arm.yaml --seed $$seed --output-dir runs/cifar10_cpu/$$arm-s$$seed \
	    --resume auto || exit 1; done; done

cifar-experiment: cifar-runs
	$(PY) -m train.results $(foreach arm,$(CIFAR_ARMS),$(arm)=$(subst $(space),$(comma),$(foreach s,$(CIFAR_SEEDS),runs/cifar10_cpu/$(arm)-s$(s)))) \
	  --out docs/cifar10

comma := ,
space := $(empty) $(empty)

test: install
	$(PY) -m pytest -q -n 2

bench: install
	$(PY) benchmarks/init_speed.py --quick
	$(PY) benchmarks/classifier.py --quick
	$(PY) benchmarks/fit.py --quick

clean:
	rm -rf $(VENV) demo .pytest_cache
