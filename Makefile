# make drill: drledger's main job on this machine: the disaster, for real, measured (drledger drill).
# make test: lint, type-check, build the docs and run the tests against real services.
# make test-unit: only the tests that need no service (tests/unit), in seconds.
# All install first, idempotently; re-run `make install` after changing pyproject.toml.
VENV ?= .venv
INSTALLED := $(shell sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(INSTALLED)
# The drill needs less than the tests (no Chromium, no Prometheus): its own, smaller install.
DRILL_STAMP := $(VENV)/.installed-drill-$(INSTALLED)

.PHONY: install install-drill drill test test-unit docs clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	rm -f $(VENV)/.installed-*
	touch $@ $(DRILL_STAMP)

install-drill: $(DRILL_STAMP)

$(DRILL_STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) SETUP_FOR=drill bash scripts/setup.sh
	rm -f $(VENV)/.installed-drill-*
	touch $@

drill: install-drill
	$(VENV)/bin/drledger drill $(ARGS)

test: install
	VENV=$(VENV) bash scripts/test.sh

test-unit: install
	$(VENV)/bin/pytest tests/unit $(ARGS)

# The documentation site (docs/, mkdocs.yml) into site/; strict, as make test builds it (never --quiet:
# it silences the warnings strict counts, and a broken link would pass).
docs: install
	$(VENV)/bin/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
