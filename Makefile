# Entry points: `make install`, `make serve`, `make test`, `make docs`. `.ci/run` calls `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install serve test docs

install: $(STAMP)

# The stamp is newer than pyproject.toml once an install succeeded, so a repeat costs nothing.
# torch goes first and alone: pinned, pip takes the CPU wheel kept on this machine instead of
# resolving the project's open range to a multi-gigabyte CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[test,docs]'
	touch $(STAMP)

serve: install
	$(BIN)/obliviate serve

# The documentation site on http://127.0.0.1:8001, rebuilt on every save (8000 is `make serve`'s).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

# Two passes over one suite: the embedded default (SQLite, SQLite-backed broker) always, and the
# real services when OBLIVIATE_TEST_DATABASE_URL says where PostgreSQL is (.ci/run sets it).
# The services pass runs even after an embedded failure, so one CI run shows both; either fails make.
# First the documentation site is built strictly into a scratch folder: a dead link or anchor, or a
# page missing from the nav, fails make as a failing test does (never --quiet: it hides the warnings
# that --strict counts, and the build passes).
test: install
	@status=0; \
	echo "== docs: mkdocs build --strict"; \
	site=$$(mktemp -d); NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$$site" || status=1; rm -rf "$$site"; \
	echo "== embedded pass: SQLite and the SQLite-backed broker"; \
	env -u OBLIVIATE_TEST_DATABASE_URL -u OBLIVIATE_TEST_REDIS_URL $(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	if [ -n "$$OBLIVIATE_TEST_DATABASE_URL" ]; then \
		echo "== services pass: PostgreSQL and Redis"; \
		$(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	else \
		echo "services pass skipped: set OBLIVIATE_TEST_DATABASE_URL and OBLIVIATE_TEST_REDIS_URL to run it"; \
	fi; \
	exit $$status
