# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser demo test lint bench-ingest bench-models clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU build of torch first, so nothing later pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The browser tests drive Debian's Chromium (Playwright's own download is not used); the
# live service's shared-state tests start Debian's redis-server.
browser:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's$$missing for the browser and service tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "make test: the tests need$$missing: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

demo: $(STAMP)
	$(VENV)/bin/ebbtide demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# pytest exits 5 when it collected nothing: that is a failure here, and says so.
test: $(STAMP) browser lint
	$(PY) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

bench-ingest: $(STAMP)
	$(PY) bench/ingest.py

bench-models: $(STAMP)
	$(PY) bench/taobao_holdout.py
	$(PY) bench/half_life_recovery.py
	$(PY) bench/btyd.py

clean:
	rm -rf $(VENV) .pytest_cache ebbtide-demo ebbtide-demo.duckdb
