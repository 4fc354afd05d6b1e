# Herald's container image: build with the Swift toolchain, run on slim Debian with only the C libraries.
#   docker build -t herald .            docker run --rm -e DATABASE_URL=… herald work
FROM swift:6.1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkgconf libpq-dev libcurl4-openssl-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product herald --static-swift-stdlib

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 libcurl4 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/.build/release/herald /usr/local/bin/herald
# `herald migrate` finds its migrations here.
COPY sql /usr/share/herald/sql
USER nobody
ENTRYPOINT ["herald"]
CMD ["work"]
