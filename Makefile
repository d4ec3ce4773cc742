# recorderd: the two commands in the README (make run, make test) do all their own set-up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := pcap_fixtures/demo-day.pcap
CONFIG := config/recorderd.yaml
# Debian tools the tests drive for real (installed when we are root and they are missing); the
# console's tests drive Chromium through chromium-driver, sign in through PAM, make TLS pairs.
DEBS   := tshark tcpreplay sip-tester faketime iproute2 libsystemd-dev pkg-config libopus0 cryptsetup-bin \
          chromium chromium-driver libpam0g libpam-modules openssl passwd fonts-ipafont-gothic

.PHONY: run test lint deps venv fixtures fuzz bench clean install sanitize deb deb-deps appliance-deps appliance-test

# $(call apt_missing,PACKAGES): install those of PACKAGES that are missing, when we are root on Debian
define apt_missing
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping Debian packages ($(1)); what needs them will skip or stop"; fi
endef

deps:
	$(call apt_missing,$(DEBS))

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	-$(PY) -m pip install -q 'systemd-python>=235' || echo "systemd-python unavailable: logging to stderr"
	touch $(STAMP)

# capture's per-packet loops in C (capture/_fastpath.c), built in place beside the Python code
FASTPATH := $(VENV)/.fastpath-built
$(FASTPATH): capture/_fastpath.c setup.py $(STAMP)
	$(PY) setup.py -q build_ext --inplace 2>&1 | grep -v -i 'beta' || true
	$(PY) -c 'from capture.fast import MODE; assert MODE == "native", "capture/_fastpath.c did not build"'
	touch $@

venv: $(STAMP) $(FASTPATH)

# The demo (recorderd/demo.py): var/demo.yaml is the bundled config for the demo store; the demo day
# is replayed into it, then the daemon and the console (https://localhost:8443/) run until Ctrl-C.
# Run as root: users demo-manager, demo-staff, demo-technician, demo-auditor (password in the README)
# sign in through PAM; otherwise you sign in as yourself, your group given every role.
DEMO_CONFIG := var/demo.yaml
DEMO_PORT   ?= 8443
run: venv
	@mkdir -p var
	$(PY) -m recorderd.demo $(CONFIG) $(DEMO_CONFIG) $(DEMO_PORT)
	$(VENV)/bin/recorderctl --config $(DEMO_CONFIG) init
	$(VENV)/bin/recorderd replay $(DEMO) --config $(DEMO_CONFIG)
	$(PY) -m recorderd.demo up $(DEMO_CONFIG)

# Many tests wait on real time (live capture, tcpreplay, a browser): on two cores the suite runs
# as two pytest processes side by side. The console's tests and make run's share the console's Unix
# users, PAM service and screenshots: they run in one process, one after another (their output is
# printed when they are done, into var/test-console.log meanwhile); every other test file runs whole
# on one of TEST_WORKERS pytest-xdist workers (its module fixtures, netns and user names are its own).
TEST_WORKERS ?= 2
SERIAL_TESTS := tests/console tests/test_make_run.py
test: deps venv
	@mkdir -p var
	@$(PY) -m pytest -q -p no:cacheprovider $(SERIAL_TESTS) > var/test-console.log 2>&1 & serial=$$!; \
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(addprefix --ignore=,$(SERIAL_TESTS)); rest=$$?; \
	wait $$serial; console=$$?; echo "--- $(SERIAL_TESTS):"; cat var/test-console.log; \
	echo "--- exit status: the rest $$rest, $(SERIAL_TESTS) $$console"; [ $$rest -eq 0 ] && [ $$console -eq 0 ]

# Static checks, configured in pyproject.toml: ruff over the tree ([tool.ruff]), mypy over the packages
# that ship ([tool.mypy]: capture/ and storage/ strict, recorderd/ and console/ their bodies checked).
lint: $(STAMP)
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy

# capture/_fastpath.c under AddressSanitizer and UndefinedBehaviorSanitizer: a copy of the tree
# with the instrumented build runs the tests that drive the C code (fixtures, public captures,
# the differential tests, the parsers' properties on arbitrary frames). Any finding aborts.
SANITIZE := build/sanitize
SANITIZE_TESTS := tests/test_fastpath.py tests/test_fixtures.py tests/test_properties.py tests/test_placement.py \
                  tests/test_source.py tests/test_call_selection.py tests/test_fragments.py tests/test_tcp.py \
                  tests/test_kernel_property.py tests/test_fastpath_encap.py tests/test_sink_contract.py
sanitize: venv
	rm -rf $(SANITIZE) && mkdir -p $(SANITIZE)
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $(SANITIZE)
	cd $(SANITIZE) && CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1" \
	  $(abspath $(PY)) setup.py -q build_ext --inplace 2>&1 | grep -v -i beta || true
	cd $(SANITIZE) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 PYTHONMALLOC=malloc RECORDERD_PUBLIC_PCAPS=$(abspath ../shared/pcaps/public) PYTHONPATH=$(abspath $(SANITIZE)) \
	  $(abspath $(PY)) -m pytest -q -p no:cacheprovider $(SANITIZE_TESTS)

fixtures: venv
	$(PY) pcap_fixtures/make_fixtures.py

clean:
	rm -rf $(VENV) var .pytest_cache $(DEB_OUT)

bench: venv
	$(PY) bench/run.py

fuzz: venv
	HYPOTHESIS_PROFILE=fuzz PIPELINE_EXAMPLES=20000 $(PY) -m pytest -q -p no:cacheprovider --durations=0 \
	  tests/test_properties.py tests/test_fragments.py tests/test_tcp.py

# An installed box: the package in its own venv under /opt/recorderd, the units, the config.
# DESTDIR stages the files (e.g. for a package); the venv's scripts name /opt/recorderd, so a staged
# tree is meant to be copied to / as it is.
DESTDIR ?=
OPT     := /opt/recorderd
install:
	$(PYTHON) -m venv $(DESTDIR)$(OPT)
	$(DESTDIR)$(OPT)/bin/pip install -q .
	cd / && $(DESTDIR)$(OPT)/bin/python -c 'from capture.fast import MODE; assert MODE == "native", "capture/_fastpath.c did not build"'
	-$(DESTDIR)$(OPT)/bin/pip install -q 'systemd-python>=235'
	install -d $(DESTDIR)/usr/bin
	ln -sf $(OPT)/bin/recorderd $(DESTDIR)/usr/bin/recorderd
	ln -sf $(OPT)/bin/recorderctl $(DESTDIR)/usr/bin/recorderctl
	ln -sf $(OPT)/bin/recorderd-console $(DESTDIR)/usr/bin/recorderd-console
	install -D -m 0644 systemd/recorderd.service $(DESTDIR)/usr/lib/systemd/system/recorderd.service
	install -D -m 0644 systemd/recorderd-console.service $(DESTDIR)/usr/lib/systemd/system/recorderd-console.service
	[ -e $(DESTDIR)/etc/pam.d/recorderd-console ] || install -D -m 0644 systemd/recorderd-console.pam $(DESTDIR)/etc/pam.d/recorderd-console
	install -D -m 0644 systemd/recorderd.sysusers $(DESTDIR)/usr/lib/sysusers.d/recorderd.conf
	install -D -m 0644 systemd/recorderd.tmpfiles $(DESTDIR)/usr/lib/tmpfiles.d/recorderd.conf
	install -D -m 0644 README.md $(DESTDIR)/usr/share/doc/recorderd/README.md
	install -d $(DESTDIR)/usr/share/doc/recorderd/docs && cp -r docs/. $(DESTDIR)/usr/share/doc/recorderd/docs/
	install -d -m 0755 $(DESTDIR)/etc/recorderd
	[ -e $(DESTDIR)/etc/recorderd/recorderd.yaml ] || install -m 0644 systemd/recorderd.yaml $(DESTDIR)/etc/recorderd/recorderd.yaml
	[ -e $(DESTDIR)/etc/recorderd/dids.yaml ] || install -m 0644 config/dids.yaml $(DESTDIR)/etc/recorderd/dids.yaml

# The Debian package (debian/): build/deb/recorderd_<version>_amd64.deb, from the files git knows
# (a copy of the tree), its version pyproject.toml's. Debian packages and PyPI wheels only; lintian
# must pass (every override is explained in debian/recorderd.lintian-overrides).
DEB_OUT   := build/deb
DEB_DEPS  := debhelper dpkg-dev gcc libsystemd-dev pkg-config python3-dev python3-venv lintian
VERSION   := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml | sed -E 's/\.?(a|b|rc|dev)([0-9]+)/~\1\2/g')
DEB       := $(DEB_OUT)/recorderd_$(VERSION)_amd64.deb
deb-deps:
	$(call apt_missing,$(DEB_DEPS))
deb: deb-deps
	debian/build-deb . $(DEB_OUT)
	lintian --fail-on error,warning --tag-display-limit 0 $(DEB)
	@ls -l $(DEB)

# The installed appliance under a real systemd (systemd-nspawn on a minimal Debian 12 tree): the
# .deb installed, upgraded from the previous commit's, run, killed, rebooted, removed; one line per
# check. Root only. The tree is cached in $(APPLIANCE_CACHE) (made again when absent).
APPLIANCE_CACHE ?= /var/cache/recorderd-appliance
APPLIANCE_DEBS := systemd-container mmdebstrap tcpreplay iproute2 faketime
appliance-deps:
	$(call apt_missing,$(APPLIANCE_DEBS))
appliance-test: appliance-deps deb
	APPLIANCE_CACHE=$(APPLIANCE_CACHE) $(PYTHON) tests/appliance/run.py --deb $(DEB)
