# banger's container image, for compose.yaml: every banger binary, the Firecracker simulator,
# nats-server and the host tools the services run, on nothing else.
#
# How it is built, and why: `FROM scratch`, from a root filesystem that ./scripts/docker-rootfs
# assembles on the host out of the binaries ./scripts/setup (or cargo) already built and the
# host's own Debian tools, each with the shared libraries ldd finds. No base image is pulled
# (a machine without a reachable registry builds it as well as any other) and nothing is
# compiled inside Docker (a second full build would take minutes). The cost: build on a Debian
# bookworm host (the libraries come from it), and run the script before building:
#
#   ./scripts/setup && ./scripts/docker-rootfs && docker compose up -d --build
#
# The context is only target/docker-rootfs/ (see .dockerignore). The image holds the simulator
# only, unless firecracker was on the host's PATH when the script ran: compose.yaml picks the
# simulator unless BANGER_VMM=firecracker, and every CLI command in it says so.
FROM scratch
COPY target/docker-rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT []
CMD ["banger", "--help"]
