.PHONY: setup test test-fast demo bench schemas lint
# The two commands in the README: `make demo` and `make test`.

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh

test-fast:
	uv run pytest -m "not slow"

demo:
	bash scripts/demo.sh

bench:
	bash scripts/bench.sh

schemas:
	uv run curate schemas
