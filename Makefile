# make demo: the shortest real use of drledger on this machine (becomes `make drill`).
# make test: lint, type-check and run the tests against real services.
# Both install first, idempotently; re-run `make install` after changing pyproject.toml.
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(VENV)/bin/python scripts/demo.py

test: install
	VENV=$(VENV) bash scripts/test.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
