# The two commands a new user needs (see README): `make demo` and `make test`.
# Everything lands in a virtual environment in .venv; OS packages the tests need (tshark, chromium) are installed
# with apt-get when missing (as root, or through sudo).

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SOURCES := $(shell find replay importers engine reports \( -name '*.py' -o -name '*.c' -o -name '*.h' \) -not -path '*/__pycache__/*') pyproject.toml

.PHONY: demo test lint typecheck samples bench-import bench-huge bench-replay bench-report bench-etl bench-stats bench-tap bench-soak fuzz tshark browser valgrind clean

$(BIN)/python:
	@$(PY) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed: installing the Debian package python3-venv"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv && \
	  $(PY) -m venv $(VENV); }
	@$(BIN)/pip install -q --upgrade pip

# Runtime install (the demo needs nothing else). Reinstalled when a module is added or pyproject changes.
$(VENV)/.runtime: $(BIN)/python $(SOURCES)
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.test: $(BIN)/python $(SOURCES)
	$(BIN)/pip install -q -e '.[test,bench]'
	@touch $@ $(VENV)/.runtime

## demo: install, show what the request/response sample trace holds, then replay it through three strategies
##       (NDIS 5 packet reuse, NDIS 6 allocate-per-send, NDIS 6 NBL reuse) into out/demo (replaced on each run),
##       and write its HTML report to out/demo-report.html
demo: $(VENV)/.runtime
	$(BIN)/ndis-replay inspect sample_traces/request_response.pcapng
	$(BIN)/ndis-replay run sample_traces/request_response.pcapng \
	  --strategy ndis5-reuse --strategy alloc --strategy reuse --rounds 3 --warmup 1 --out out/demo --force \
	  --report out/demo-report.html
	@echo "The report: $(CURDIR)/out/demo-report.html (open it in a browser; it needs no network)"

## test: install what the tests need (Python packages, tshark, chromium, valgrind), then lint, type-check and run the
##       suite (the native core is built by pip install: a C compiler is needed, as for the install itself)
test: $(VENV)/.test tshark browser valgrind
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

tshark:
	@command -v tshark >/dev/null 2>&1 || { \
	  echo "tshark is missing: installing the Debian package tshark"; \
	  $(SUDO) apt-get update -qq && \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | $(SUDO) debconf-set-selections && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq tshark >/dev/null; }

# tests/test_native.py runs the native core under valgrind memcheck (its ASan/UBSan build needs only gcc)
valgrind:
	@command -v valgrind >/dev/null 2>&1 || { \
	  echo "valgrind is missing: installing the Debian package valgrind"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq valgrind >/dev/null; }

# The HTML report's acceptance test (tests/test_report_browser.py) renders it in Debian's chromium, driven by
# playwright: `playwright install` would download a browser build instead, which a closed network cannot fetch.
browser:
	@[ -x /usr/bin/chromium ] || { \
	  echo "chromium is missing: installing the Debian package chromium"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

typecheck: $(VENV)/.test
	$(BIN)/pytest tests/test_static.py -q

samples: $(VENV)/.runtime
	$(BIN)/python sample_traces/make_samples.py

bench-import: $(VENV)/.test
	$(BIN)/python bench/import_bench.py

# 10,000,000 packets: makes a 3.7 GB pcap in bench/data once; ~10 minutes per engine
bench-huge: $(VENV)/.test
	$(BIN)/python bench/huge_bench.py

bench-replay: $(VENV)/.test
	$(BIN)/python bench/replay_bench.py

bench-report: $(VENV)/.test
	$(BIN)/python bench/report_bench.py

bench-etl: $(VENV)/.test
	$(BIN)/python bench/etl_bench.py --compressed-mb 20

bench-stats: $(VENV)/.test
	$(BIN)/python bench/stats_bench.py

## fuzz: coverage-guided fuzzing of the importers (atheris): writes the seeds, runs each of FUZZ_TARGETS for
##       FUZZ_SECONDS, prints executions, exec/s, coverage and findings (inputs in bench/fuzz/artifacts/)
FUZZ_TARGETS ?= pcap pcapng etl csv
FUZZ_SECONDS ?= 60
fuzz: $(VENV)/.fuzz
	$(BIN)/python bench/fuzz/make_seeds.py
	$(BIN)/python bench/fuzz/run_all.py --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

$(VENV)/.fuzz: $(BIN)/python $(SOURCES)
	$(BIN)/pip install -q -e '.[fuzz]'
	@touch $@ $(VENV)/.runtime

# The TAP miniport against tcpreplay --topspeed, each into a TAP device in a namespace of its own (needs root; the
# Debian package tcpreplay is installed when missing: the bench only, never the tests).
bench-tap: $(VENV)/.test
	@command -v tcpreplay >/dev/null 2>&1 || { \
	  echo "tcpreplay is missing: installing the Debian package tcpreplay"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq tcpreplay >/dev/null; }
	$(SUDO) $(BIN)/python bench/tap_bench.py

# Every strategy × loopback and tap × native and Python replayed round after round for SOAK_MINUTES in all: RSS,
# descriptors and fds must stay flat (as root through sudo, for the tap miniport; without root tap is skipped).
SOAK_MINUTES ?= 10
bench-soak: $(VENV)/.test
	$(SUDO) $(BIN)/python bench/soak_bench.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
