# Set-up and checks. `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test classifiers evidence fit-evidence bench clean cifar-data cifar-experiment cifar-dogconv cifar-peers cifar-k9 cifar-results

install: $(STAMP)

# ffcv is optional; it needs system libraries, which we can only install as root with apt.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[all,dev]'
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libopencv-dev libturbojpeg0-dev >/dev/null \
	   && $(PIP) install --quiet -e '.[all,ffcv,dev]') \
	  || echo "warning: optional ffcv extra could not be installed; the torchvision data path still works"; \
	fi
	touch $(STAMP)

demo: install
	$(PY) -m dog_init preview --mix paper --size 7 --n 64 --seed 0 --out demo/kernels.png
	rm -rf runs/demo
	$(PY) -m train --config recipes/demo.yaml --output-dir runs/demo/dog
	$(PY) -m train --config recipes/demo.yaml --init.name default --output-dir runs/demo/default
	$(PY) -m train.timeline default=runs/demo/default dog=runs/demo/dog --out runs/demo/timeline.png
	@echo "two runs, DoG init and its default-init twin: runs/demo/{dog,default} (census.jsonl, metrics.jsonl)"
	@echo "cluster shares against training time, both runs: runs/demo/timeline.png"
	@echo "TensorBoard, both runs side by side (custom scalars: family shares, clustered share, top-1):"
	@echo "  $(VENV)/bin/tensorboard --logdir runs/demo"

# The bundled classifiers in analysis/weights (needs ../shared/data/kernels; about an hour on 2 idle CPU cores).
classifiers: install
	$(PY) -m analysis.classify.bundle --sizes 3 5 7 9 11 13

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

# The README's Results: CIFAR-10 on a 2-core CPU budget (recipes/cifar10_cpu), 3 seeds per arm. cifar-experiment
# trains default vs DoG init (about 2 h on 2 idle cores), cifar-dogconv the DoGConv2d arms (issue 10); both end with
# cifar-results. Every run resumes where it stopped (--resume auto), so a target can be interrupted and rerun.
CIFAR_SEEDS ?= 0 1 2
CIFAR_RUNS  := runs/cifar10_cpu
cifar-experiment: ARMS = default dog
cifar-dogconv: ARMS = dogconv dogconv_residual
# The published depthwise initialisers beside DoG, trained and frozen (issue 17's comparison; docs/results.md).
# default and dog are here too, so that every arm of its table and figures ran on the same machine.
ALL_PEER_ARMS := default dog covariance impulse frozen_dog frozen_default covariance_transfer gaussian bank \
                 frozen_covariance frozen_bank frozen_impulse
PEER_ARMS ?= $(ALL_PEER_ARMS)
cifar-peers: ARMS = $(PEER_ARMS)
# 9x9 depthwise kernels (issue 16): one seed of each arm, the census over epochs by the bundled 9x9 classifier.
cifar-k9: ARMS = default_k9 dog_k9
cifar-k9: CIFAR_SEEDS = 0
cifar-experiment cifar-dogconv cifar-peers cifar-k9: install cifar-data
	for seed in $(CIFAR_SEEDS); do for arm in $(ARMS); do \
	  $(PY) -m train --config recipes/cifar10_cpu/$$arm.yaml --seed $$seed --output-dir $(CIFAR_RUNS)/$$arm-s$$seed \
	    --resume auto || exit 1; done; done
	$(MAKE) cifar-results RESULTS_ARMS="$(RESULTS_ARMS)" RESULTS_OUT=$(RESULTS_OUT)

# Censuses again with the bundled classifiers (cheap: every epoch checkpoint is kept), then tables and figures of
# the finished RESULTS_ARMS runs of seeds 0-2 (each target passes its own arms and folder; a run in progress waits).
RESULTS_ARMS ?= default dog dogconv dogconv_residual
RESULTS_OUT  ?= docs/cifar10
cifar-experiment cifar-dogconv: RESULTS_ARMS = default dog dogconv dogconv_residual
cifar-peers: RESULTS_ARMS = $(ALL_PEER_ARMS)
cifar-peers: RESULTS_OUT = docs/cifar10_peers
cifar-k9: RESULTS_ARMS = default_k9 dog_k9
cifar-k9: RESULTS_OUT = docs/cifar10_k9
arm_runs = $(patsubst %/model.safetensors,%,$(wildcard $(foreach s,0 1 2,$(CIFAR_RUNS)/$(1)-s$(s)/model.safetensors)))
cifar-results: install
	$(PY) -m train.census $(foreach arm,$(RESULTS_ARMS),$(call arm_runs,$(arm)))
	$(PY) -m train.results $(foreach arm,$(RESULTS_ARMS),$(if $(call arm_runs,$(arm)),$(arm)=$(subst \
	  $(space),$(comma),$(strip $(call arm_runs,$(arm)))))) --out $(RESULTS_OUT)

comma := ,
space := $(empty) $(empty)

test: install
	$(PY) -m pytest -q -n 2

bench: install
	$(PY) benchmarks/init_speed.py --quick
	$(PY) benchmarks/classifier.py --quick
	$(PY) benchmarks/dogconv.py --quick
	$(PY) benchmarks/fit.py --quick
	$(PY) benchmarks/trainer.py --quick
	$(PY) benchmarks/tracking.py --quick
	$(PY) benchmarks/data.py --quick

clean:
	rm -rf $(VENV) demo .pytest_cache
