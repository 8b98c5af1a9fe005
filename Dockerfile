# Multi-stage build for users with a Docker engine:
#   docker build -t ferrolb:dev .
# Without Docker (as in this repo's CI): scripts/build-image.sh builds the same image with umoci.
# The toolchain crates/ferrolb/speaker.order was written with (scripts/speaker-order.sh): the
# list names functions by their symbols, which another rustc names differently.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY scripts/build-release.sh ./scripts/
# Without the default `lab` feature (no embedded API server, no plotting), glibc linked in.
RUN cp "$(scripts/build-release.sh)" /ferrolb && strip /ferrolb

# No shell, no package manager; runs as uid 65534 by default.
# The speaker DaemonSet overrides the user to 0 with every capability dropped except NET_RAW.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /ferrolb /usr/local/bin/ferrolb
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/ferrolb"]
CMD ["--help"]
