# Albatross developer entry points. `make demo` and `make test` set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
BROKER_STAMP := $(VENV)/.broker-stamp
# The virtual board's ESP32-faithful MicroPython (32-bit, single-precision floats), built once
# from the pinned v1.28.0 source; without it the vboard falls back to the 64-bit PyPI build.
RUNTIME := $(BIN)/micropython-esp32
RUNTIME_SRC := $(wildcard host_tools/vboard/runtime/variant/* host_tools/vboard/runtime/build.py \
  host_tools/vboard/rom/*.py)
# labgrid (board farms, docs/hil.md) in a venv of its own that also sees .venv's packages:
# labgrid depends on pyserial-labgrid, which overwrites pyserial's files (its RFC 2217 client
# skips repeated DTR/RTS requests), so it stays out of .venv. Same pin as pyproject's extra.
LABGRID := labgrid==26.0.1
LG_VENV := $(VENV)/labgrid
LG_STAMP := $(LG_VENV)/.stamp
TEST_OUT := build/test-output

.DEFAULT_GOAL := help
.PHONY: help setup labgrid demo test test-quick lint bench soak clean

help:
	@echo "make setup       create $(VENV) (python >= 3.11) and install albatross + dev tools"
	@echo "make demo        a virtual tracker reports to a local MQTT broker (DEMO_S=seconds)"
	@echo "make test        the whole test suite, then the serial and labgrid HIL targets"
	@echo "make test-quick  unit and simulator tests (no HIL, no end-to-end runs): about a minute"
	@echo "make lint        ruff check + ruff format --check"
	@echo "make bench       albatross benchmark"
	@echo "make soak        the 30-minute PSRAM-less fit scenario (hil_tests/test_fit.py)"
	@echo "make labgrid     $(LG_VENV): labgrid for --target labgrid (docs/hil.md)"
	@echo "make clean       remove $(VENV) and caches"

setup: $(STAMP) $(BROKER_STAMP) $(RUNTIME)

# Re-run pip only when pyproject.toml changes, so repeated `make test` starts at once.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: albatross needs Python >= 3.11; '$(PYTHON)' is $$(command -v $(PYTHON) >/dev/null && $(PYTHON) -V 2>&1 || echo "not found") (make PYTHON=python3.11 ...)" >&2; \
	  exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: could not create $(VENV); on Debian/Ubuntu: apt-get install python3-venv" >&2; \
	  rm -rf $(VENV); exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# A local MQTT broker: mosquitto if it can be had, otherwise the pip-installed amqtt is used.
# Tried once per venv; never prompts and never fails the build.
$(BROKER_STAMP): | $(STAMP)
	@if command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing mosquitto with apt-get (optional: amqtt is the fallback)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -qq mosquitto </dev/null >/dev/null 2>&1 || \
	    { apt-get update -qq </dev/null >/dev/null 2>&1 && \
	      apt-get install -y -qq mosquitto </dev/null >/dev/null 2>&1; }; } || \
	  echo "note: mosquitto could not be installed; tests and demo use amqtt"; \
	else \
	  echo "note: mosquitto not found (apt-get install mosquitto); tests and demo use amqtt"; \
	fi
	@touch $@

# gcc-multilib (32-bit libc for -m32 -static) from Debian when run as root, as for mosquitto;
# a failed build is a notice, not an error: the vboard then says it runs the 64-bit build.
$(RUNTIME): $(RUNTIME_SRC) | $(STAMP)
	@if ! echo 'int main(void){return 0;}' | gcc -m32 -static -x c -o /dev/null - 2>/dev/null && \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing gcc-multilib with apt-get (for the 32-bit ESP32-faithful runtime)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq gcc-multilib make </dev/null >/dev/null 2>&1 || \
	    { apt-get update -qq </dev/null >/dev/null 2>&1 && \
	      apt-get install -y -qq gcc-multilib make </dev/null >/dev/null 2>&1; } || true; \
	fi
	@echo "building the ESP32-faithful MicroPython runtime (once; cached in build/runtime)"
	@$(BIN)/python -m host_tools.vboard.runtime.build --out $@ && touch $@ || \
	  echo "note: the 32-bit runtime could not be built; the virtual board uses the 64-bit one"

$(LG_STAMP): | $(STAMP)
	@test -x $(LG_VENV)/bin/python || $(BIN)/python -m venv $(LG_VENV)
	@$(LG_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >$(LG_VENV)/.purelib
	@echo "import site; site.addsitedir('$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
	  >"$$(cat $(LG_VENV)/.purelib)/albatross-venv.pth"
	$(LG_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '$(LABGRID)'
	@touch $@

labgrid: $(LG_STAMP)

demo: setup
	$(BIN)/albatross demo $(if $(DEMO_S),--seconds $(DEMO_S))

# Five workers (pytest-xdist): the HIL scenarios mostly wait on simulated time, so they
# overlap well even on two cores. Tests are handed out one at a time (--maxschedchunk 1) in
# the order conftest.py gives them, the long scenarios first, so no worker ends the run alone.
# Then the real-board path (hil_tests/plugin/ci.py): the serial and labgrid targets against
# virtual boards reached only through their serial ports. JUnit XML and logs: $(TEST_OUT).
test: setup $(LG_STAMP)
	@mkdir -p $(TEST_OUT)
	@echo "$(BIN)/python -m pytest -n 5 --maxschedchunk 1 --junitxml=$(TEST_OUT)/junit.xml"; \
	  $(BIN)/python -m pytest -n 5 --maxschedchunk 1 --junitxml=$(TEST_OUT)/junit.xml; main=$$?; \
	  echo "--- the real-board path: --target serial and --target labgrid on virtual boards"; \
	  $(BIN)/python -m hil_tests.plugin.ci --out $(TEST_OUT); hil=$$?; \
	  test $$main = 0 && test $$hil = 0

# The big fuzz runs take a tenth of their examples here (tests/fuzz_budget.py).
test-quick: setup
	ALBATROSS_FUZZ_SCALE=0.1 $(BIN)/python -m pytest -n 3 -m "not slow and not hil and not e2e"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/albatross benchmark

soak: setup
	ALBATROSS_FIT_MINUTES=30 $(BIN)/python -m pytest hil_tests/test_fit.py -s

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
