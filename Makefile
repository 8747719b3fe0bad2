# The two commands a new user needs: `make dev` (the main job) and `make test`.
# Everything else here is a step of those two.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: dev test venv controlplane lint crds bench clean

$(BIN)/tenantry: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/tenantry

## make dev: local control plane + PostgreSQL + CRDs + sample tenant (uses $KUBECONFIG if set)
dev: venv
	$(BIN)/tenantry dev up

## make controlplane: build etcd/kube-apiserver/kube-controller-manager and kubectl once into
## ~/.cache/tenantry (each cached apart: a missing one is built, the others are kept)
controlplane: venv
	$(BIN)/tenantry dev build

lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy
	$(BIN)/tenantry crds --check

## make test: lint, type-check, CRD drift check, then unit and e2e tests against real parts
test: controlplane lint
	$(BIN)/pytest -q

crds: venv
	$(BIN)/tenantry crds

bench: venv
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
