# The `tailgate` binary, for the stage services of docker-compose.yml (`tailgate stage ...`)
# and for runs from a container. The embedded broker is left out: in the stack, Kafka is the
# broker.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --no-default-features --bin tailgate \
 && cp target/release/tailgate /usr/local/bin/tailgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/tailgate --create-home tailgate
COPY --from=build /usr/local/bin/tailgate /usr/local/bin/tailgate
USER tailgate
WORKDIR /var/lib/tailgate
ENTRYPOINT ["/usr/local/bin/tailgate"]
CMD ["--help"]
