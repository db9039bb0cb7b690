# syntax=docker/dockerfile:1
# Portico image: a static (musl) `portico` on distroless/static, non-root.
#   docker build -t portico .

FROM rust:1.89-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# ring and mimalloc compile C: musl-gcc makes the result fully static.
ENV CC_x86_64_unknown_linux_musl=musl-gcc
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin portico \
 && cp target/x86_64-unknown-linux-musl/release/portico /portico

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /portico /usr/local/bin/portico
# 65532 is distroless's "nonroot"; the chart runs it with a read-only root.
USER 65532:65532
EXPOSE 8080 8443 10254
ENTRYPOINT ["/usr/local/bin/portico"]
CMD ["run"]
