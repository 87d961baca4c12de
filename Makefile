# Quick start: `make demo` runs the main job, `make test` runs the tests. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deps-installed
DATA   ?= ../shared/data/fer2013

PROTOS := $(shell find proto -name '*.proto')
STUBS  := edgefer/v1/edge_pb2.py

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup proto redis-server demo classify test images image-check constraints train-baseline train-baseline-cpu export-baseline bench bench-edge loadgen clean

$(STAMP): pyproject.toml setup.py Makefile docker/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing dependencies into $(VENV) (first run only)"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -c docker/constraints.txt torch==2.13.0
	@$(BIN)/python -m pip install -q --disable-pip-version-check -c docker/constraints.txt -e '.[worker,rollouts,dev]'
	@touch $(STAMP)

# gRPC stubs are generated from proto/ (never committed, never edited).
$(STUBS): $(PROTOS) edgefer/protogen.py $(STAMP)
	@$(BIN)/python -m edgefer.protogen

proto: $(STUBS)

# The registry tests, the benchmarks and the demo fleet start real redis-server processes.
redis-server:
	@command -v redis-server >/dev/null || { echo "installing redis-server (Debian package, first run only)"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends redis-server >/dev/null; }; }

# promtool (rule checks and rule unit tests in `make test`): Debian's prometheus package, unpacked into the
# virtualenv without installing it (no service started).
PROMTOOL := $(VENV)/tools/usr/bin/promtool
$(PROMTOOL): $(STAMP)
	@command -v dpkg-deb >/dev/null && command -v apt-get >/dev/null || { echo "promtool: no apt-get/dpkg-deb; rule tests will skip"; exit 0; }
	@echo "unpacking promtool from Debian's prometheus package (first run only)"
	@rm -rf $(VENV)/tools/deb && mkdir -p $(VENV)/tools/deb && \
	  { (cd $(VENV)/tools/deb && apt-get download prometheus >/dev/null 2>&1) || \
	    { $(SUDO) apt-get update -q >/dev/null && (cd $(VENV)/tools/deb && apt-get download prometheus >/dev/null 2>&1); }; } && \
	  dpkg-deb -x $(VENV)/tools/deb/prometheus_*.deb $(VENV)/tools && rm -rf $(VENV)/tools/deb $(VENV)/tools/usr/bin/prometheus

setup: $(STAMP) $(STUBS) redis-server $(PROMTOOL)

# The local fleet: redis-server, the worker, two edge nodes, two device clients, a rollout mid-stream.
demo: setup
	@$(BIN)/edgefer-demo

# Classify FER2013 test faces with the shipped model (no fleet).
classify: setup
	@$(BIN)/edgefer-classify --model models/ean-baseline.onnx --data $(DATA)/test_public.npz --show 14

test: setup
	@$(BIN)/python -m pytest -q

# Both images from the working tree (docker, or podman: ../shared/tools/container-env/setup.sh here).
images: setup
	@$(BIN)/python docker/images.py build $(IMAGE_ARGS)

# The edge image built from a clean export of HEAD, run and checked from outside (IMAGE_ARGS=--arm64: emulated).
image-check: setup
	@$(BIN)/python docker/images.py check $(IMAGE_ARGS)

# Pin what the images install to what this virtualenv (the one `make test` passed with) has.
constraints: setup
	@{ sed -n '/^#/p' docker/constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | \
	  grep -v -i -E '^(pytest|ruff|iniconfig|pluggy|pygments|kubernetes-validate|jsonschema|jsonschema-specifications|referencing|rpds-py|attrs|importlib.resources|pyyaml)=='; \
	  $(BIN)/python -m pip list --format freeze | grep -i '^setuptools=='; } > docker/constraints.tmp && mv docker/constraints.tmp docker/constraints.txt

# The shipped baseline (ean-m, 80 epochs): 4 minutes on a GPU, about 87 minutes on 2 CPU cores (docs/BENCHMARKS.md).
train-baseline: $(STAMP)
	$(BIN)/edgefer-worker train --data $(DATA)/train.npz --test-data $(DATA)/test_public.npz --arch ean-m --epochs 80 \
		--label-smoothing 0.1 --workdir runs/baseline-m80

# The CPU-budget recipe (ean-s, 55 epochs, about 30 minutes on 2 CPU cores; 64.73%): the ITS teacher.
train-baseline-cpu: $(STAMP)
	$(BIN)/edgefer-worker train --data $(DATA)/train.npz --test-data $(DATA)/test_public.npz --workdir runs/baseline

export-baseline: $(STAMP)
	$(BIN)/edgefer-worker export --checkpoint runs/baseline-m80/model.pt --output models/ean-baseline.onnx --test-data $(DATA)/test_public.npz

bench: $(STAMP)
	$(BIN)/python benchmarks/model_latency.py models/ean-baseline.onnx

# The `fer` package (the comparison in docs/BENCHMARKS.md) needs TensorFlow: a virtualenv of its own.
# Its wheel asks for facenet-pytorch (a CUDA torch) and video tools the benchmark does not use.
FER_PY := .venv-fer/bin/python
$(FER_PY):
	python3 -m venv .venv-fer
	.venv-fer/bin/pip install -q --no-deps fer==25.10.3
	.venv-fer/bin/pip install -q tensorflow-cpu 'opencv-python-headless<5' pillow requests 'setuptools<81'

# The compiled load generator (benchmarks/loadgen): gRPC C++ and protobuf from Debian's packages.
LOADGEN := build/loadgen/edge-load
$(LOADGEN): benchmarks/loadgen/edge_load.cc $(PROTOS)
	@command -v grpc_cpp_plugin >/dev/null && test -f /usr/include/google/protobuf/port_def.inc || \
	  { echo "installing gRPC C++ (Debian packages, first run only)"; $(SUDO) apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends \
	      g++ pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc >/dev/null; }
	@mkdir -p build/loadgen
	protoc -I proto --cpp_out=build/loadgen --grpc_out=build/loadgen --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) $(PROTOS)
	g++ -O2 -std=c++17 -I build/loadgen benchmarks/loadgen/edge_load.cc build/loadgen/edgefer/v1/edge.pb.cc \
		build/loadgen/edgefer/v1/edge.grpc.pb.cc -o $@ $$(pkg-config --cflags --libs grpc++ protobuf) -lpthread

loadgen: $(LOADGEN)

bench-edge: setup $(FER_PY) $(LOADGEN)
	$(BIN)/python benchmarks/edge_throughput.py --model models/ean-pruned.onnx --streams 1 4 16 --seconds 10 --repeat 3 \
		--workers 2 --batch-concurrency 1 --client compiled --fer-python $(FER_PY)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
