# One image with every banger binary, for compose.yaml. Build from the repository root:
#   docker compose build        (or: docker build -t banger:local .)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        pkg-config libdevmapper-dev libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/banger target/release/banger-vm-controller target/release/banger-netd \
          target/release/banger-stord target/release/banger-dnsd target/release/banger-agent \
          target/release/banger-fcsim /out/

FROM debian:bookworm-slim
# nats-server: the bus; nftables/iproute2: netd; e2fsprogs/util-linux/dmsetup: stord's disks;
# libdevmapper: stord's device-mapper back-end.
RUN apt-get update && apt-get install -y --no-install-recommends \
        nats-server nftables iproute2 e2fsprogs util-linux dmsetup libdevmapper1.02.1 \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
ENTRYPOINT []
