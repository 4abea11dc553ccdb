# zeronas: `make run ROOT=dir` serves a folder, `make test` runs every check CI runs.
SHELL := /bin/bash
CARGO ?= cargo
ROOT ?= ./share
HTTP ?= 127.0.0.1:8080
APT_PACKAGES := curl ca-certificates python3-seccomp

.PHONY: run test deps fmt lint unit build help bench crds

help:
	@echo "make run ROOT=DIR   serve DIR over the HTTP file API on $(HTTP)"
	@echo "make test           fmt check, clippy -D warnings, all tests (what CI runs)"

## Installs what the build and the tests need, when missing.
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	$(CARGO) build --release --locked -p zeronas-dataplane

run: build
	mkdir -p "$(ROOT)"
	$(CARGO) run --release --locked -p zeronas-dataplane -- --root "$(ROOT)" --http "$(HTTP)"

## crds: regenerate the CRD from the Rust types (never edit crds/nasvolume.yaml by hand)
crds:
	$(CARGO) run -q --locked -p zeronas-operator --bin crdgen > crds/nasvolume.yaml
	cp crds/nasvolume.yaml charts/zeronas/crds/nasvolume.yaml

fmt:
	$(CARGO) fmt --all -- --check

lint: deps
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit: deps
	$(CARGO) test --workspace --locked

test: deps fmt lint unit

## bench: zeronas vs nginx (sendfile on/off) with wrk; table on stdout, JSON in target/bench/
bench: deps
	python3 dataplane/bench/http_bench.py
