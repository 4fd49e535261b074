# The two commands of the README:
#   make run    set up everything, start the whole stack in the background and boot a
#               server to ACTIVE in front of you (`.venv/bin/novalog down` stops the stack)
#   make test   set up everything, then ruff, mypy, the import contracts (lint-imports) and
#               the whole test suite (CI runs exactly this)
# Both install what is missing first: Debian packages via apt-get (a Java runtime and
# Maven too, for the embedded Apache Kafka, when `java` / `mvn` are not there), then a
# virtualenv in .venv with the project and its test extras.

VENV        ?= .venv
PYTHON      ?= python3
DEB_PACKAGES = libvirt-dev pkg-config gcc qemu-utils python3-venv
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP       := $(VENV)/.installed

.PHONY: run test setup lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	@touch $@

run: setup
	@$(VENV)/bin/novalog status >/dev/null 2>&1 || $(VENV)/bin/novalog up --detach
	$(VENV)/bin/novalog boot demo-1 --flavor m1.tiny --image cirros --wait
	@$(VENV)/bin/novalog list

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
