# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAGE ?= prod

.PHONY: run test check bench package clean install

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9 \
		|| $(BIN)/python -m pip install -q --disable-pip-version-check uv
	@$(BIN)/uv pip install -q -p $(BIN)/python -r requirements-dev.txt \
		|| $(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m local

# One file per worker at a time, in collection order: xdist otherwise hands out the files with
# the most tests first, which leaves the long few-test e2e files (schemathesis, the restart) for
# last, one worker running them alone; tests/{browser,clients,e2e} sort first, so they start first.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -q

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Figures are printed and merged into bench/results.json (~20 min: the tick bench stores 100k tasks,
# the soak with faults injected takes up to 10).
bench: $(STAMP)
	$(BIN)/python bench/schedules.py
	$(BIN)/python bench/adversarial.py
	$(BIN)/python bench/tick.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/signing_secrets.py
	$(BIN)/python bench/lag.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/soak.py
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/python bench/package.py --stage $(STAGE)

# build/$(STAGE)/sam.json + deployment.zip: `chalice package` with infra/ merged in (docs/deploy.md).
package: $(STAMP)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/python -m infra.package --stage $(STAGE)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache

.PHONY: reset
# Forget what `make run` kept in .data/ (tables, queues, the generated admin token).
reset:
	rm -rf .data

.PHONY: deploy destroy
# The chalice path end to end, idempotent (docs/deploy.md): make deploy STAGE=prod [DRY_RUN=1]
deploy: $(STAMP)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/python -m infra.deploy --stage $(STAGE) $(if $(DRY_RUN),--dry-run)

# Remove a deployed stage (asks for CONFIRM=<stage>; the tables are kept)
destroy: $(STAMP)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/python -m infra.deploy --destroy --stage $(STAGE) $(if $(DRY_RUN),--dry-run)
