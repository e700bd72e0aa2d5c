# The whole set-up on a fresh Debian 12 root: `make run` and `make test`.
PYTHON ?= /usr/bin/python3
VENV   := .venv
PY     := $(VENV)/bin/python
# What pip needs to build pystemd, our C extension and the static hook trampoline (libc6-dev:
# libc.a), and what the tools call.
APT_RUN  := python3 python3-venv python3-dev gcc libc6-dev pkg-config libsystemd-dev util-linux procps
# What the integration and end-to-end tests drive: real systemd, D-Bus, PHP, Apache httpd
# (learn's e2e test; ~8 s to install, 5 packages with --no-install-recommends), PostgreSQL 15
# (Debian 12's `postgresql`: the e2e test of packaging/examples/postgresql.toml makes its own
# cluster inside the contained systemd; the host's is never started). `prometheus` for
# promtool, `prometheus-node-exporter` for the scrape test (its binary, run by pid on loopback).
# zsh and fish: their completions are loaded by the real shells (tests/test_completion_shells.py).
# The Perl packages: what IPC::Shareable's own tests need (tests/peers/).
APT_TEST := systemd dbus php-cli apache2 scdoc man-db groff-base faketime postgresql \
            prometheus prometheus-node-exporter zsh fish strace \
            libipc-shareable-perl libmock-sub-perl libtest-sharedfork-perl

.PHONY: run test test-fast lint bench setup setup-test clean man deb rpm package-test golden \
        adversary soak completion peers

run: setup
	$(VENV)/bin/ipcjanitor scan

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py ipcjanitor/_sysvipc.c ipcjanitor/ipcjanitor-hook.c
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

# Rewrite tests/golden/ (the pinned renderings of scan, --json, policy check, doctor) after a
# meant change of output; review the diff with the change.
golden: setup
	IPCJANITOR_GOLDEN=update $(PY) -m pytest -q tests/test_golden.py

# Line coverage (coverage.py) of every tier, subprocesses in namespaces included; the figure
# is printed at the end (build/coverage/ holds the data; `coverage html` renders it).
test: setup-test lint peers
	rm -rf build/coverage && mkdir -p build/coverage
	$(PY) -m coverage run -m pytest -q
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --sort=cover | tail -n 12
	@echo "line coverage: $$($(PY) -m coverage report --format=total)%"
	$(MAKE) package-test

# The adversarial harness (tests/adversary/, also part of `make test`): random schedules of
# real processes in private namespaces against clean, scan and hook, and hooked units under a
# contained systemd (tests/adversary/units.py, one boot per schedule). `make adversary` runs the CI
# set alone (fixed seeds, ~2 min); `make soak` draws new seeds for SOAK_MINUTES, SOAK_JOBS at
# a time, keeping each failing schedule in build/adversary/ (replay and shrink it with
# `python -m tests.adversary.outside --shrink FILE`).
SOAK_MINUTES ?= 30
SOAK_JOBS    ?= 2
SOAK_STEPS   ?= 200
SOAK_UNIT_STEPS ?= 80

adversary: setup-test
	CI=true $(PY) -m pytest -q -m adversary tests/adversary

soak: setup-test
	$(PY) -m tests.adversary.outside --minutes $(SOAK_MINUTES) --jobs $(SOAK_JOBS) --steps $(SOAK_STEPS)
	$(PY) -m tests.adversary.units --minutes $(SOAK_MINUTES) --steps $(SOAK_UNIT_STEPS)

# Rewrite the zsh and fish completions from the argparse parser (shtab, pinned in the dev
# extra) after a change of the command line; tests/test_completion_shells.py fails until then.
completion: setup
	$(PY) packaging/completion/generate.py zsh > packaging/completion/_ipcjanitor
	$(PY) packaging/completion/generate.py fish > packaging/completion/ipcjanitor.fish

# The peers tier's sources (tests/peers/, part of `make test`): sysv_ipc's sdist from PyPI,
# built into the venv, and IPC::Shareable's Debian source through a private deb-src list in
# build/peers/apt (the host's apt configuration is not touched); fetched once into build/peers/.
peers: setup
	$(PY) -m tests.peers.fetch

MAN_SRC := $(wildcard docs/*.scd)
MAN_OUT := $(patsubst docs/%.scd,build/man/%,$(MAN_SRC))

man: $(MAN_OUT)

build/man/%: docs/%.scd
	@command -v scdoc >/dev/null || sh packaging/apt-install.sh scdoc
	mkdir -p build/man
	scdoc < $< > $@

# Debian package: dist/ipcjanitor_*.deb, built from the tracked (and new, unignored) files.
APT_DEB := build-essential dpkg-dev debhelper dh-python pybuild-plugin-pyproject \
           python3-all-dev python3-setuptools scdoc lintian fakeroot

deb:
	sh packaging/apt-install.sh $(APT_DEB)
	rm -rf build/deb && mkdir -p build/deb/ipcjanitor dist
	git ls-files -z --cached --others --exclude-standard | \
	    xargs -0 cp -P --parents -t build/deb/ipcjanitor
	cp -rP packaging/debian build/deb/ipcjanitor/debian
	cd build/deb/ipcjanitor && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	rm -f dist/ipcjanitor_*.deb && mv build/deb/ipcjanitor_*.deb dist/
	lintian --fail-on error --suppress-tags initial-upload-closes-no-bugs dist/ipcjanitor_*.deb

# RPM package: dist/ipcjanitor-*.rpm. --nodeps: a Debian build host has no RPM database to
# satisfy BuildRequires from; the spec defines the systemd scriptlet macros it may lack.
# __brp_compress: Debian 12's brp-compress needs bash (`read -d`) but starts with #!/bin/sh,
# and compresses no man page under dash; Fedora's gzips them. Then rpmlint, with Fedora's
# settings and the filters packaging/rpm/rpmlint.toml justifies.
rpm:
	sh packaging/apt-install.sh rpm rpmlint cpio scdoc python3-setuptools gcc python3-dev
	rm -rf build/rpm && mkdir -p build/rpm/SOURCES build/rpm/stage/ipcjanitor-0.1.0 dist
	git ls-files -z --cached --others --exclude-standard | \
	    xargs -0 cp -P --parents -t build/rpm/stage/ipcjanitor-0.1.0
	tar -C build/rpm/stage -czf build/rpm/SOURCES/ipcjanitor-0.1.0.tar.gz ipcjanitor-0.1.0
	cp packaging/dropins.sh build/rpm/SOURCES/ipcjanitor-dropins.sh
	PATH=/usr/sbin:/usr/bin:/sbin:/bin rpmbuild -bb --nodeps --define "_topdir $(CURDIR)/build/rpm" \
	    --define "__brp_compress /bin/bash /usr/lib/rpm/brp-compress /usr" packaging/rpm/ipcjanitor.spec
	rm -f dist/ipcjanitor-*.rpm && mv build/rpm/RPMS/*/ipcjanitor-*.rpm dist/
	rpmlint -c packaging/rpm/rpmlint.toml packaging/rpm/ipcjanitor.spec dist/ipcjanitor-*.rpm

# Build both packages, lint the deb, install it on a fresh Debian 12 root, inspect the rpm.
package-test: deb rpm
	sh packaging/apt-install.sh debootstrap
	sh packaging/test-deb-install.sh
	sh packaging/test-rpm.sh

# run.py: the 64k clean and the no-owner hook (unshare'd); restart.py: a SIGKILLed service's
# restart with and without the hook under the contained real systemd, and with 20,000 more
# processes (~2 min, root).
# bench/postgres.py (by hand, ~75 s): what a SIGKILLed PostgreSQL leaves in /dev/shm per policy.
bench: setup
	$(PY) bench/run.py
	$(PY) bench/restart.py

clean:
	rm -rf $(VENV) build *.egg-info ipcjanitor/*.so ipcjanitor/ipcjanitor-hook
