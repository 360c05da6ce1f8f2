# Multi-stage build: compile silo-proxy, then ship it on Debian with the
# PostgreSQL server it launches inside each silo.
#
#   docker build -t silo-proxy .
#   docker run --rm -p 6432:6432 -p 9432:9432 \
#       --cap-add SYS_ADMIN --cap-add SETUID --cap-add SETGID --cap-add SYS_CHROOT \
#       --cap-add KILL --cap-add DAC_OVERRIDE --cap-add CHOWN --cap-add FOWNER \
#       --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#       --cgroupns=private -v silo-state:/var/lib/silo-proxy silo-proxy
#
# Why those capabilities: the proxy maps a distinct host uid range into each
# silo (SETUID/SETGID), creates user/mount/pid/net/ipc/uts namespaces and
# mounts inside them (SYS_ADMIN; the runtime's default seccomp profile and
# AppArmor profile forbid unshare/mount, hence unconfined — silo-proxy
# installs its own seccomp filter on every silo), chowns data directories to
# the silo's uid (CHOWN, FOWNER, DAC_OVERRIDE), and signals postmasters
# (KILL). Alternatively run with --privileged.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/silo-proxy ./cmd/silo-proxy

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql postgresql-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rm -rf /etc/postgresql /var/lib/postgresql/*
COPY --from=build /out/silo-proxy /usr/local/bin/silo-proxy
COPY deploy/docker-config.yaml /etc/silo-proxy/config.yaml
VOLUME /var/lib/silo-proxy
EXPOSE 6432 9432
USER root
ENTRYPOINT ["/usr/local/bin/silo-proxy"]
CMD ["run", "--config", "/etc/silo-proxy/config.yaml", "--log-format", "json"]
