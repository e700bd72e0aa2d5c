# The whole set-up on a fresh Debian 12 root: `make run` and `make test`.
PYTHON ?= /usr/bin/python3
VENV   := .venv
PY     := $(VENV)/bin/python
# What pip needs to build pystemd and our C extension, and what the tools call.
APT_RUN  := python3 python3-venv python3-dev gcc pkg-config libsystemd-dev util-linux procps
# What the integration and end-to-end tests drive: real systemd, D-Bus, PHP.
APT_TEST := systemd dbus php-cli scdoc man-db groff-base

.PHONY: run test test-fast lint bench setup setup-test clean man

run: setup
	$(VENV)/bin/ipcjanitor scan

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py ipcjanitor/_sysvipc.c
	sh packaging/apt-install.sh $(APT_RUN)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

setup-test: setup
	sh packaging/apt-install.sh $(APT_TEST)

lint: setup
	$(VENV)/bin/ruff check ipcjanitor tests bench
	$(VENV)/bin/ruff format --check ipcjanitor tests bench
	$(VENV)/bin/mypy

# Unit and property tests only: seconds, no root needed.
test-fast: setup
	$(PY) -m pytest -q -m 'not integration'

test: setup-test lint
	$(PY) -m pytest -q

MAN_SRC := $(wildcard docs/*.scd)
MAN_OUT := $(patsubst docs/%.scd,build/man/%,$(MAN_SRC))

man: $(MAN_OUT)

build/man/%: docs/%.scd
	@command -v scdoc >/dev/null || sh packaging/apt-install.sh scdoc
	mkdir -p build/man
	scdoc < $< > $@

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info ipcjanitor/*.so
