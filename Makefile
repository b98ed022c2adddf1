# `make test` works on a fresh clone: it installs what the tests need, then runs them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PKGS := tshark tcpdump nginx-light wrk curl iproute2
STAMP := $(VENV)/.installed

.PHONY: test demo apt venv bench clean fixtures

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: apt venv
	$(BIN)/pytest -q tests

fixtures: apt venv
	$(BIN)/python fixtures/make_fixtures.py

bench: apt venv
	$(BIN)/python bench/extract.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
