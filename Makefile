# `make test` works on a fresh clone: it installs what the tests need, then runs them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PKGS := tshark tcpdump nginx-light wrk curl iproute2 chromium
STAMP := $(VENV)/.installed

.PHONY: test demo apt venv bench clean fixtures

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard capture/*.py replay/authority.py replay/sampling.py replay/request.py replay/plan.py) $(wildcard capture/native/*.c capture/native/*.h replay/native/*.c replay/native/*.h)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing the project and its test tools into $(VENV) (log: $(VENV)/install.log)"
	@( $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[test]' ) > $(VENV)/install.log 2>&1 \
	  || { tail -30 $(VENV)/install.log; exit 1; }
	touch $(STAMP)

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: apt venv
	$(BIN)/pytest -q tests

# The main job, played on this machine: Istio's mirroring task with real servers (httpbin v1 and
# v2 in network namespaces, capture, extract, replay, show, analyze; then a changed v2 that must
# fail). Root for the namespaces and the capture. Recordings and reports in demo-out/.
demo: apt venv
	$(BIN)/shadowtap demo --out demo-out

fixtures: apt venv
	$(BIN)/python fixtures/make_fixtures.py

bench: apt venv
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/capture.py
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/analyze.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache capture/*.so replay/*.so *__mypyc*.so
