# syntax=docker/dockerfile:1

# Build stage: the release binary. protoc is not needed (build.rs compiles the protos with protox).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
# The emulator crate is a workspace member, so cargo needs it to resolve the workspace; the binary
# is built without it (no `emulator` feature: `dev` and `emulator` say how to get them).
COPY emulator ./emulator
COPY examples/emulator-fixtures.toml ./examples/
# The Cedar schema is compiled into the binary as the default.
COPY policy ./policy
# The approvals store's migrations are compiled into the binary too.
COPY migrations ./migrations
RUN cargo build --release --locked --no-default-features --bin datashare-gateway

# Runtime stage: glibc and CA certificates only, no shell, running as a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/datashare-gateway /usr/local/bin/datashare-gateway
# 65532 is distroless's nonroot user.
USER 65532:65532
# 50051: gRPC (mTLS). 50052: plaintext grpc.health.v1 only, for kubelet gRPC probes. 9464: the
# admin listener (/metrics, /livez, /readyz) when server.admin_listen is 0.0.0.0:9464.
EXPOSE 50051 50052 9464
ENTRYPOINT ["/usr/local/bin/datashare-gateway"]
CMD ["serve", "--config", "/etc/datashare-gateway/gateway.toml"]
