# Entry points: `make install`, `make serve`, `make test`. `.ci/run` calls `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install serve test

install: $(STAMP)

# The stamp is newer than pyproject.toml once an install succeeded, so a repeat costs nothing.
# torch goes first and alone: pinned, pip takes the CPU wheel kept on this machine instead of
# resolving the project's open range to a multi-gigabyte CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

serve: install
	$(BIN)/obliviate serve

# Two passes over one suite: the embedded default (SQLite, SQLite-backed broker) always, and the
# real services when OBLIVIATE_TEST_DATABASE_URL says where PostgreSQL is (.ci/run sets it).
# The services pass runs even after an embedded failure, so one CI run shows both; either fails make.
test: install
	@status=0; \
	echo "== embedded pass: SQLite and the SQLite-backed broker"; \
	env -u OBLIVIATE_TEST_DATABASE_URL -u OBLIVIATE_TEST_REDIS_URL $(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	if [ -n "$$OBLIVIATE_TEST_DATABASE_URL" ]; then \
		echo "== services pass: PostgreSQL and Redis"; \
		$(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	else \
		echo "services pass skipped: set OBLIVIATE_TEST_DATABASE_URL and OBLIVIATE_TEST_REDIS_URL to run it"; \
	fi; \
	exit $$status
