# Two commands set everything up on a fresh machine:
#   make run   - create .venv, install, initialise a node if none exists, start the daemon
#   make test  - install (with the dev extra) and run the whole test suite

PYTHON ?= python3
VENV   := .venv
# Test processes (pytest-xdist): most tests wait on daemons, so two keep two cores busy.
TEST_WORKERS ?= 2
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test prereqs test-prereqs install clean bench

run: install
	$(BIN)/peerlight init --if-missing
	exec $(BIN)/peerlight start

test: install test-prereqs
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

install: $(STAMP)

# Re-install only when the project's declared dependencies change.
$(STAMP): pyproject.toml | prereqs
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel >/dev/null
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# libp2p pins fastecdsa, which is built from source: it needs a C compiler and the GMP headers.
prereqs:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "error: Python >= 3.11 is required ($(PYTHON) is $$($(PYTHON) --version 2>&1))"; exit 1; }
	@command -v gcc >/dev/null || command -v cc >/dev/null || \
	  { echo "error: a C compiler is required to build fastecdsa (Debian/Ubuntu: apt-get install build-essential)"; exit 1; }
	@printf '#include <gmp.h>\nint main(void){return 0;}\n' | $${CC:-cc} -x c - -o /dev/null 2>/dev/null || \
	  { echo "error: the GMP headers are required to build fastecdsa (Debian/Ubuntu: apt-get install libgmp-dev; Fedora: dnf install gmp-devel; macOS: brew install gmp)"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
	  { echo "error: Python's venv module is missing (Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }

# The NAT tests build a small internet of network namespaces, routers masquerading with iptables;
# the web UI's tests drive a real chromium.
test-prereqs:
	@command -v iptables >/dev/null || \
	  { echo "error: the NAT tests need iptables (Debian/Ubuntu: apt-get install iptables)"; exit 1; }
	@command -v ip >/dev/null || \
	  { echo "error: the network tests need ip (Debian/Ubuntu: apt-get install iproute2)"; exit 1; }
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || test -n "$$PEERLIGHT_BROWSER" || \
	  { echo "error: the web UI's browser tests need chromium (Debian/Ubuntu: apt-get install chromium; or set PEERLIGHT_BROWSER)"; exit 1; }

bench: install
	@for b in bench/*.py; do [ -e "$$b" ] || continue; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) build *.egg-info
