# Developer shortcuts. `make lint` is also run by scripts/test.sh.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: lint test bench bench-report

lint:
	$(BIN)/ruff format --check python tests benches scripts
	$(BIN)/ruff check python tests benches scripts
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest lfr._core --allowlist .stubtest-allowlist
	cargo fmt --check
	cargo clippy --release --all-targets --quiet -- -D warnings
	cargo clippy --release --all-targets --quiet --all-features -- -D warnings
	cargo clippy --release --all-targets --quiet --features python -- -D warnings

test:
	bash scripts/test.sh

# Runs the matcher and secure-memory benchmarks and rewrites docs/benchmarks.md from
# their results. The OpenBLAS variables set on some machines would hold numpy back.
bench:
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
		$(BIN)/python -m pytest benches/ --benchmark-only --benchmark-json=.benchmarks/latest.json
	$(BIN)/python benches/report.py .benchmarks/latest.json docs/benchmarks.md
