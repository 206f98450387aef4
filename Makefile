# make drill: drledger's main job on this machine: the disaster, for real, measured (drledger drill).
# make test: lint, type-check and run the tests against real services.
# Both install first, idempotently; re-run `make install` after changing pyproject.toml.
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)

.PHONY: install drill test clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	rm -f $(VENV)/.installed-*
	touch $@

drill: install
	$(VENV)/bin/drledger drill $(ARGS)

test: install
	VENV=$(VENV) bash scripts/test.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
