# syntax=docker/dockerfile:1
# Build: docker build -t plenary .
# Run:   see README.md ("Docker").

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Manifests first, so dependency builds are cached across source changes.
COPY Cargo.toml Cargo.lock ./
COPY crates/proto/Cargo.toml crates/proto/Cargo.toml
COPY crates/sfu/Cargo.toml crates/sfu/Cargo.toml
COPY crates/meeting/Cargo.toml crates/meeting/Cargo.toml
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src crates/proto/src crates/sfu/src crates/meeting/src loadtest/src web \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && touch crates/proto/src/lib.rs crates/sfu/src/lib.rs crates/meeting/src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked -p plenary --bin plenary || true
COPY . .
# Make cargo see the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs crates/proto/src/lib.rs crates/sfu/src/lib.rs crates/meeting/src/lib.rs \
    && cargo build --release --locked -p plenary --bin plenary \
    && strip target/release/plenary

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin plenary
COPY --from=build /src/target/release/plenary /usr/local/bin/plenary
COPY plenary.example.toml /etc/plenary/plenary.example.toml
USER plenary
# Listen on all interfaces inside the container. Outside loopback Plenary requires
# PLENARY_AUTH_API_KEYS and, for media, PLENARY_MEDIA_ANNOUNCE_IPS (the host's public IP).
ENV PLENARY_HTTP_ADDR=0.0.0.0:8080 \
    PLENARY_MEDIA_ADDR=0.0.0.0:7882 \
    PLENARY_LOG=info
# Media shards listen on 7882 + their index; PLENARY_MEDIA_SHARDS (default: one per core)
# says how many. Publish the same range with `docker run -p`. ICE over TCP, when turned on
# with PLENARY_MEDIA_TCP_ADDR=0.0.0.0:7881, uses one TCP port for all shards. With built-in
# TLS (PLENARY_TLS_CERT/KEY), publish 443 -> 8080 (and ICE-TCP may share it: set
# PLENARY_MEDIA_TCP_ADDR to the HTTP address).
EXPOSE 8080/tcp 7881/tcp 7882-7889/udp
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/plenary"]
CMD ["serve"]
