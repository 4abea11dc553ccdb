# zeronas: `make run ROOT=dir` serves a folder, `make test` runs every check CI runs.
SHELL := /bin/bash
CARGO ?= cargo
ROOT ?= ./share
HTTP ?= 127.0.0.1:8080
NFS ?= 127.0.0.1:2049
APT_PACKAGES := curl ca-certificates python3-seccomp python3-yaml openssl iproute2 libnfs-utils strace \
	qemu-system-x86 busybox-static cpio kmod umoci openssh-client openssh-server sshfs fuse3 \
	chromium chromium-driver
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# Debian's Python, which the apt packages above (yaml, matplotlib, seccomp) are for.
PYTHON := /usr/bin/python3
# Tools built from their Go modules, cached outside the repository.
TOOLS := $(HOME)/.cache/zeronas/bin
HELM_VERSION := v3.22.0
HELM := $(TOOLS)/helm-$(HELM_VERSION)
# promtool from Prometheus 3.16 (Go module versions v0.3xx.y are Prometheus 3.xx.y).
PROMETHEUS_VERSION := v0.316.0
PROMTOOL := $(TOOLS)/promtool-$(PROMETHEUS_VERSION)
PROMETHEUS := $(TOOLS)/prometheus-$(PROMETHEUS_VERSION)
# toxiproxy, the fault proxy of `make chaos` (v2.5.0 is the newest its module proxy serves).
TOXIPROXY_VERSION := v2.5.0
TOXIPROXY := $(TOOLS)/toxiproxy-$(TOXIPROXY_VERSION)

.PHONY: run test deps fmt lint unit build help bench crds chart e2e kernel-client images bench-operator \
	monitoring dashboard-picture chaos

help:
	@echo "make run ROOT=DIR   serve DIR over the HTTP file API on $(HTTP) and NFSv3 on $(NFS)"
	@echo "make test           fmt check, clippy -D warnings, all tests (what CI runs)"
	@echo "make bench-operator the operator at 1,000 new and 2,000 existing NasVolumes (target/bench/operator.json)"
	@echo "make chaos          network, process and disk faults with real clients; CHAOS_LONG=1 for bigger files"

## Installs what the build and the tests need, when missing.
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(CARGO) build --release --locked -p zeronas-dataplane

run: build
	mkdir -p "$(ROOT)"
	$(CARGO) run --release --locked -p zeronas-dataplane -- --root "$(ROOT)" --http "$(HTTP)" --nfs "$(NFS)"

## crds: regenerate the CRD from the Rust types (never edit crds/nasvolume.yaml by hand)
crds:
	$(CARGO) run -q --locked -p zeronas-operator --bin crdgen > crds/nasvolume.yaml
	cp crds/nasvolume.yaml charts/zeronas/crds/nasvolume.yaml

fmt:
	$(CARGO) fmt --all -- --check

lint: deps
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

## unit: every cargo test, then the HTTP suites again on the io_uring engine, then one
## summary line ("tests: N passed, N failed")
HTTP_SUITES := --test http_api --test http_access --test zero_copy --test readme --test process
unit: deps
	@mkdir -p target; set -o pipefail; \
	$(CARGO) test --workspace --locked 2>&1 | tee target/unit-tests.log; status=$$?; \
	echo "== the HTTP suites on --io-engine io_uring"; \
	ZERONAS_IO_ENGINE=io_uring $(CARGO) test --locked -p zeronas-dataplane $(HTTP_SUITES) 2>&1 \
		| tee -a target/unit-tests.log || status=1; \
	awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/) f += $$i } } \
	     END { printf "tests: %d passed, %d failed\n", p, f }' target/unit-tests.log; \
	exit $$status

$(HELM):
	@echo "building helm $(HELM_VERSION) from its Go module into $(TOOLS) (once)"
	mkdir -p $(TOOLS)/.gobin
	GOBIN=$(TOOLS)/.gobin GOFLAGS=-buildvcs=false $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(TOOLS)/.gobin/helm $(HELM)

$(PROMTOOL):
	@echo "building promtool $(PROMETHEUS_VERSION) from its Go module into $(TOOLS) (once)"
	mkdir -p $(TOOLS)/.gobin
	GOBIN=$(TOOLS)/.gobin GOFLAGS=-buildvcs=false $(GO) install github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_VERSION)
	mv $(TOOLS)/.gobin/promtool $(PROMTOOL)

$(PROMETHEUS):
	@echo "building prometheus $(PROMETHEUS_VERSION) from its Go module into $(TOOLS) (once)"
	mkdir -p $(TOOLS)/.gobin
	GOBIN=$(TOOLS)/.gobin GOFLAGS=-buildvcs=false $(GO) install github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_VERSION)
	mv $(TOOLS)/.gobin/prometheus $(PROMETHEUS)

## monitoring: the chart's rules with promtool (check, and the unit tests that make every
## alert fire and stay silent), and every dashboard query parsed by promtool; the e2e checks
## their metric names against real scrapes
monitoring: deps $(PROMTOOL)
	$(PROMTOOL) check rules charts/zeronas/files/prometheus-rules.yaml
	$(PROMTOOL) test rules charts/zeronas/tests/rules-test.yaml
	$(PYTHON) charts/zeronas/tests/check_monitoring.py --promtool $(PROMTOOL)

$(TOXIPROXY):
	@echo "building toxiproxy $(TOXIPROXY_VERSION) from its Go module into $(TOOLS) (once)"
	mkdir -p $(TOOLS)/.gobin
	GOBIN=$(TOOLS)/.gobin GOFLAGS=-buildvcs=false $(GO) install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)
	mv $(TOOLS)/.gobin/server $(TOXIPROXY)

## chaos: faults on the network (toxiproxy), the processes (SIGKILL, SIGSTOP) and the disk
## (a full tmpfs, a read-only remount, EIO from chaos/faultfs, sendfile refused) against
## dataplanes run as the operator renders them, with curl, libnfs and the kernel client in QEMU;
## a table fault x protocol x outcome, any lost or corrupt byte fails it. Needs root: it
## mounts in a mount namespace of its own and runs in a PID namespace of its own, so every
## process it starts ends with it, even at the hard stop. CHAOS_LONG=1: bigger files and
## transfers, outside make test. It builds the same three release packages as `make images`,
## so make test reuses them.
CHAOS_FLAGS := $(if $(CHAOS_LONG),--long --budget 1800,--budget 180)
# As images/build.sh sets it: build scripts (cc) rerun when it changes, so without it this
# build would redo the release build `make images` just made.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# A hard stop above the budget: nothing in the run may hang make test.
CHAOS_TIMEOUT := $(if $(CHAOS_LONG),2400,300)
chaos: deps $(TOXIPROXY)
	cd chaos/faultfs && GOFLAGS=-buildvcs=false $(GO) build -o $(CURDIR)/target/faultfs .
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(CARGO) build --release --locked -p zeronas-dataplane -p zeronas-operator -p zeronas-csi
	@set -o pipefail; timeout --kill-after=10 $(CHAOS_TIMEOUT) \
		unshare --mount --propagation private --pid --fork --kill-child $(PYTHON) chaos/chaos.py \
		--toxiproxy $(TOXIPROXY) --faultfs target/faultfs --dataplane target/release/zeronas-dataplane \
		--operator target/release/zeronas-operator $(CHAOS_FLAGS) 2>&1 | tee target/chaos.log

## dashboard-picture: a dataplane under a changing load, scraped by a real Prometheus with
## the chart's rules; the dashboard's queries plotted with matplotlib (docs/dashboard.png)
dashboard-picture: deps $(PROMETHEUS)
	@dpkg -s python3-matplotlib > /dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -qq --no-install-recommends python3-matplotlib; }
	$(CARGO) build --release --locked -p zeronas-dataplane
	PROMETHEUS=$(PROMETHEUS) $(PYTHON) charts/zeronas/tests/dashboard_picture.py

## chart: helm lint --strict, render every variant, and prove the values schema rejects unknown keys
chart: $(HELM)
	@mkdir -p target
	$(HELM) lint --strict charts/zeronas
	$(HELM) template zeronas charts/zeronas --namespace zeronas-system > /dev/null
	$(HELM) template zeronas charts/zeronas --set metrics.serviceMonitor.enabled=true | grep -q "kind: ServiceMonitor"
	$(HELM) template zeronas charts/zeronas | grep -q 'image: "ghcr.io/zeronas/operator:0.1.0"'
	$(HELM) template zeronas charts/zeronas --set image.digest=sha256:$$(printf '%064d' 1) \
		--set dataplaneImage.tag=1.2.3 --set dataplaneImage.digest=sha256:$$(printf '%064d' 2) > target/chart-digest.yaml
	grep -q 'image: "ghcr.io/zeronas/operator:0.1.0@sha256:0*1"' target/chart-digest.yaml
	grep -q -- '--dataplane-image=ghcr.io/zeronas/dataplane:1.2.3@sha256:0*2' target/chart-digest.yaml
	@if $(HELM) template zeronas charts/zeronas --set image.digest=latest > /dev/null 2>&1; then \
		echo "values.schema.json accepted a malformed digest" >&2; exit 1; fi
	@if $(HELM) template zeronas charts/zeronas --set unknownKey=1 > /dev/null 2>&1; then \
		echo "values.schema.json accepted an unknown key" >&2; exit 1; fi
	$(HELM) template zeronas charts/zeronas --set replicas=2 --set podDisruptionBudget.enabled=true | grep -q "kind: PodDisruptionBudget"
	@if $(HELM) template zeronas charts/zeronas --set replicas=2 --set leaderElection.enabled=false > /dev/null 2>&1; then \
		echo "the chart rendered two replicas without leader election" >&2; exit 1; fi
	@if $(HELM) template zeronas charts/zeronas --set leaderElection.renewDeadlineSeconds=20 > /dev/null 2>&1; then \
		echo "the chart rendered a renew deadline longer than the lease" >&2; exit 1; fi
	$(HELM) template zeronas charts/zeronas --set controller.apiQPS=200 --set controller.apiBurst=400 \
		--set controller.maxConcurrentReconciles=16 > target/chart-controller.yaml
	grep -q -- '--api-qps=200' target/chart-controller.yaml
	grep -q -- '--api-burst=400' target/chart-controller.yaml
	grep -q -- '--max-concurrent-reconciles=16' target/chart-controller.yaml
	$(HELM) template zeronas charts/zeronas > target/chart-csi.yaml
	grep -q "kind: CSIDriver" target/chart-csi.yaml
	grep -q "provisioner: csi.zeronas.io" target/chart-csi.yaml
	grep -q "kind: DaemonSet" target/chart-csi.yaml
	grep -A60 "kind: DaemonSet" target/chart-csi.yaml | grep -q "runAsUser: 0"
	@if $(HELM) template zeronas charts/zeronas --set csi.enabled=false | grep -q "csi.zeronas.io"; then \
		echo "csi.enabled=false still rendered CSI objects" >&2; exit 1; fi
	$(HELM) template zeronas charts/zeronas --set csi.storageClass.default=true \
		--set csi.storageClass.parameters.identity=Squash --set 'csi.storageClass.mountOptions={soft}' \
		| grep -A24 "kind: StorageClass" > target/chart-class.yaml
	grep -q 'storageclass.kubernetes.io/is-default-class: "true"' target/chart-class.yaml
	grep -q 'identity: "Squash"' target/chart-class.yaml
	grep -q -- '- soft' target/chart-class.yaml
	@if $(HELM) template zeronas charts/zeronas --set csi.storageClass.parameters.colour=blue > /dev/null 2>&1; then \
		echo "values.schema.json accepted an unknown StorageClass parameter" >&2; exit 1; fi
	@if $(HELM) template zeronas charts/zeronas | grep -q "kind: PodMonitor\|kind: PrometheusRule\|grafana_dashboard"; then \
		echo "monitoring objects rendered while disabled" >&2; exit 1; fi
	$(HELM) lint --strict charts/zeronas --set metrics.podMonitor.enabled=true \
		--set metrics.prometheusRule.enabled=true --set metrics.dashboard.enabled=true
	$(HELM) template zeronas charts/zeronas --namespace zeronas-system --set metrics.podMonitor.enabled=true \
		--set metrics.prometheusRule.enabled=true --set metrics.prometheusRule.labels.release=kps \
		--set metrics.dashboard.enabled=true --set metrics.serviceMonitor.enabled=true > target/chart-monitoring.yaml
	$(PYTHON) charts/zeronas/tests/check_chart_monitoring.py target/chart-monitoring.yaml
	@if $(HELM) template zeronas charts/zeronas --set metrics.podMonitor.interval=soon > /dev/null 2>&1; then \
		echo "values.schema.json accepted a malformed scrape interval" >&2; exit 1; fi

## e2e: a real control plane (built once from Go modules), the chart, the operator and a dataplane
## run by the test node agent, the CSI driver with external-provisioner, external-resizer and
## csi-sanity (also built from their Go modules); scenarios in e2e/tests/cluster.rs, logs in
## target/e2e/
# Built as `make unit` builds (the whole workspace: one feature set, so nothing is compiled
# twice); the binaries the pods run come from that build.
E2E_TEST := $(CARGO) test --workspace --locked --features zeronas-e2e/e2e

e2e: deps $(HELM) $(PROMTOOL)
	e2e/scripts/build-controlplane.sh > /dev/null
	e2e/scripts/build-csi-tools.sh > /dev/null
	$(CARGO) test --workspace --locked --no-run
	$(E2E_TEST) --test cluster --no-run
	@set -o pipefail; HELM=$(HELM) ZERONAS_PROMTOOL=$(PROMTOOL) ZERONAS_CSI_TOOLS=$$(e2e/scripts/build-csi-tools.sh 2>/dev/null) \
		e2e/scripts/netns.sh $(E2E_TEST) --offline --test cluster -- --nocapture 2>&1 | tee target/e2e.log

## images: OCI images of the operator and the dataplane in target/images/<name> (umoci, from
## the release binaries and the libraries they link; pulls nothing from a registry)
images: deps
	images/build.sh

## images-check: each image's config, and its binaries run from the image's root file system
images-check: images
	@set -o pipefail; images/check.sh 2>&1 | tee target/images-check.log

## kernel-client: Debian's kernel in QEMU mounts the dataplane (run as `zeronas-operator
## render` says) in both identity modes and runs the file workload (e2e/kernel/)
kernel-client: deps
	$(CARGO) test --workspace --locked --no-run
	$(E2E_TEST) --test kernel_client --no-run
	@set -o pipefail; $(E2E_TEST) --offline --test kernel_client -- --nocapture 2>&1 | tee target/kernel-client.log

## test: every stage in order, each one's time printed, then the cargo tests' summary line
TEST_STAGES := fmt lint chart monitoring images-check chaos unit kernel-client e2e
test: deps
	@mkdir -p target; : > target/test-stages.log; \
	free_gib=$$(df -P -k target | awk 'NR==2 { print int($$4 / 1048576) }'); \
	echo "== disk: $$free_gib GiB free for target/ (a cold run writes about 9.5 GiB)"; \
	if [ "$$free_gib" -lt 10 ]; then echo "== warning: under 10 GiB free; the build may fail with 'No space left on device'"; fi; \
	for stage in $(TEST_STAGES); do \
		start=$$(date +%s); echo "== make $$stage"; \
		$(MAKE) --no-print-directory $$stage || { echo "== stage $$stage FAILED after $$(( $$(date +%s) - start )) s"; exit 1; }; \
		echo "$$stage $$(( $$(date +%s) - start ))" >> target/test-stages.log; \
		echo "== stage $$stage: $$(( $$(date +%s) - start )) s, target/ $$(du -sh target | cut -f1)"; \
	done; \
	echo "== stage times (s): $$(tr '\n' ' ' < target/test-stages.log)"; \
	awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/) f += $$i } } \
	     /^(images|chaos): [0-9]+ passed, [0-9]+ failed/ { p += $$2; f += $$4 } \
	     END { printf "tests: %d passed, %d failed\n", p, f }' target/unit-tests.log target/images-check.log target/chaos.log \
	     target/kernel-client.log target/e2e.log

## bench: zeronas vs nginx (sendfile on/off) with wrk, vs NFS-Ganesha with libnfs, and vs
## OpenSSH's sftp-server with OpenSSH's sftp; tables on stdout, JSON in target/bench/ (the NFS
## and SFTP parts need root: own namespaces, sshd)
bench: deps
	python3 dataplane/bench/http_bench.py
	python3 dataplane/bench/nfs_bench.py
	python3 dataplane/bench/sftp_bench.py

## bench-operator: the release operator on its own control plane (e2e/scripts/controlplane.sh,
## other ports than the e2e's), as the chart's ServiceAccount with the chart's RBAC: time to
## reconcile 1,000 new NasVolumes, a restart with 2,000,
## API writes, apiserver 5xx/429, RSS peak; table on stdout, JSON in target/bench/operator.json
bench-operator: deps $(HELM)
	$(CARGO) build --release --locked -p zeronas-operator
	HELM=$(HELM) python3 operator/bench/operator_bench.py
