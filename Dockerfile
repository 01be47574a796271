# syntax=docker/dockerfile:1
# The telemux operator image: a static telemux binary (musl, rustls only: no OpenSSL, no
# libc at run time) plus the telemux OpenTelemetry Collector distribution, whose `validate`
# checks every collector configuration before the operator rolls it out
# (`--collector-binary=/usr/local/bin/otelcol-telemux`, as the Helm chart passes it).
#
#   docker build -t <registry>/telemux:0.1.0 .
#
# NOTE: no image could be built where this file was written (no container registry or
# daemon was reachable); the stages mirror what the repository builds and tests locally
# (`cargo build`, e2e/collector/install-collector.sh), but the file itself is unverified.
# Only linux/amd64 is described (RUST_TARGET); for arm64 use aarch64-unknown-linux-musl.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

# --- the collector: built exactly as `make collector` builds it (collector builder,
# --- versions from e2e/collector/versions.env, telemux_appinsights from
# --- collector/appinsightsexporter, CGO_ENABLED=0, so static). Dockerfile.collector builds
# --- the collector pods' image with a copy of this stage.
FROM ${GO_IMAGE} AS collector
WORKDIR /src
COPY e2e/collector/ e2e/collector/
COPY collector/appinsightsexporter/ collector/appinsightsexporter/
ENV XDG_CACHE_HOME=/cache GOTOOLCHAIN=local CGO_ENABLED=0
# Go's build cache follows XDG_CACHE_HOME (/cache/go-build); the module cache is GOPATH's.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/cache/go-build \
    bash e2e/collector/install-collector.sh \
 && cp "$(bash e2e/collector/install-collector.sh --print-path)" /otelcol-telemux \
 && /otelcol-telemux --version

# --- the operator: static musl binary. ring (rustls' crypto) compiles C, hence musl-gcc.
# --- The ldd check fails the build if the binary is dynamic (it could not start on the
# --- distroless base).
FROM ${RUST_IMAGE} AS operator
ARG RUST_TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${RUST_TARGET}"
WORKDIR /src
COPY . .
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=+crt-static"
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin telemux --target "${RUST_TARGET}" \
 && cp "target/${RUST_TARGET}/release/telemux" /telemux \
 && ! ldd /telemux 2>/dev/null | grep -q '=>' \
 && /telemux --version

# --- runtime: no shell, no package manager, CA certificates, user 65532.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="telemux" \
      org.opencontainers.image.description="Kubernetes operator for per-tenant OpenTelemetry pipelines into Azure Application Insights" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=collector /otelcol-telemux /usr/local/bin/otelcol-telemux
COPY --from=operator /telemux /usr/local/bin/telemux
USER 65532:65532
# Operator metrics, /livez and /readyz (the chart's `--metrics-bind-address`).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/telemux"]
CMD ["run"]
