# From-scratch install without a package: `make install` puts jrs in
# $(PREFIX)/bin, the init script in /etc/init.d, the systemd units in
# $(PREFIX)/lib/systemd/system and example node.master/node.list in /etc/jrs
# (never over existing ones), nothing else. DESTDIR is honoured.
#
#   make                 build dist/jrs.pyz
#   make install         then /etc/init.d/jrs-daemon start (after `jrs keygen`)
#   make uninstall       removes what install put there (and unchanged examples)
#   make deb             dist/jrs_<version>_{amd64,arm64}.deb

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
INITDIR    ?= $(SYSCONFDIR)/init.d
UNITDIR    ?= $(PREFIX)/lib/systemd/system
PYTHON     ?= python3
DESTDIR    ?=

UNITS = jrs-daemon.service jrs-master.service jrs-node.service
EXAMPLES = node.master node.list

.PHONY: all build install uninstall deb check

all: build

build:
	$(PYTHON) build_zipapp.py

dist/jrs.pyz:
	$(PYTHON) build_zipapp.py

install: dist/jrs.pyz
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(INITDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSCONFDIR)/jrs
	install -m 0755 dist/jrs.pyz $(DESTDIR)$(BINDIR)/jrs
	sed -e 's|^JRS_BIN=/usr/bin/jrs |JRS_BIN=$(BINDIR)/jrs |' \
		-e 's|^JRS_CONFIG=/etc/jrs |JRS_CONFIG=$(SYSCONFDIR)/jrs |' \
		init.d/jrs-daemon >$(DESTDIR)$(INITDIR)/jrs-daemon
	chmod 0755 $(DESTDIR)$(INITDIR)/jrs-daemon
	for u in $(UNITS); do \
		sed -e 's|/usr/bin/jrs |$(BINDIR)/jrs |g' -e 's|/etc/jrs|$(SYSCONFDIR)/jrs|g' \
			systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	for f in $(EXAMPLES); do \
		[ -e $(DESTDIR)$(SYSCONFDIR)/jrs/$$f ] || \
		install -m 0644 examples/etc-jrs/$$f $(DESTDIR)$(SYSCONFDIR)/jrs/$$f || exit 1; \
	done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/jrs $(DESTDIR)$(INITDIR)/jrs-daemon
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	for f in $(EXAMPLES); do \
		if cmp -s examples/etc-jrs/$$f $(DESTDIR)$(SYSCONFDIR)/jrs/$$f; then \
			rm -f $(DESTDIR)$(SYSCONFDIR)/jrs/$$f; fi; \
	done
	-rmdir $(DESTDIR)$(SYSCONFDIR)/jrs 2>/dev/null

deb: dist/jrs.pyz
	./build-deb.sh
