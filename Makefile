# The two commands a new user types: `make demo` and `make test`. Both install what is
# missing (the Python venv with pinned torch, the cargo config pointing at its libtorch)
# and are idempotent: a second run does no network work.
BIN := target/release/gpt2-parity
CARGO ?= cargo

.PHONY: setup build demo test fixtures clean-cache

setup:
	bash scripts/setup-venv.sh
	bash scripts/configure-cargo.sh

build: setup
	$(CARGO) build --release --locked

demo: build
	$(BIN) compare "Hello World" --model fixtures/tiny-gpt2

# The tests run many compares and Python ports at once, more threads than cores: libgomp's
# threads then spin waiting for each other's descheduled peers, unless told to sleep instead
# (tests/envelope.rs on 2 cores: 73 s passive, 155-170 s spinning). Results do not change.
test: setup
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(CARGO) test --release --locked

# Regenerates the fixture model and its committed references (needs npm for GPT-2's BPE).
fixtures: setup
	bash scripts/make_fixtures.sh
