#!/usr/bin/env bash
# Builds the images the Docker tests use, FROM scratch, from binaries on this machine
# (no image registry is reachable here):
#   berth-test/busybox  busybox-static: sh, httpd, nc, sleep ...
#   berth-test/node     the host's node binary plus the libraries ldd lists, and the
#                       host's CA bundle (NODE_EXTRA_CA_CERTS) for builds needing npm
#   berth-test/web      node + test/fixtures/web-backend.mjs (graceful HTTP endpoint)
#   berth-test/prometheus  Debian's prometheus binary (the compose example's scraper)
#   berth-test/dnsmasq  Debian's dnsmasq (the layer4 example's DNS pool)
#   berth-test/postgres Debian's PostgreSQL 15, entrypoint and snakeoil certificate as
#                       the official image has them (the layer4 example's databases)
#   berth-test/berth    berth from the repository Dockerfile (NODE_IMAGE=berth-test/node);
#                       the node base also carries the host npm for its build stage
# An image is rebuilt only when its inputs changed (hash kept in a label).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! [ -x /bin/busybox ] || ! /bin/busybox --list 2>/dev/null | grep -qx httpd; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
fi

hash_of() { cat "$@" | sha256sum | cut -c1-16; }
current_hash() { docker image inspect -f '{{ index .Config.Labels "org.berth-test.hash" }}' "$1" 2>/dev/null || true; }

build() { # name hash dir
  if [ "$(current_hash "$1")" = "$2" ]; then echo "$1 up to date"; return; fi
  docker build -q --label "org.berth-test.hash=$2" -t "$1" "$3" >/dev/null
  echo "built $1"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# busybox
mkdir -p "$work/busybox/rootfs/bin" "$work/busybox/rootfs/tmp"
cp /bin/busybox "$work/busybox/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$work/busybox/rootfs/bin/$a"; done
cat > "$work/busybox/Dockerfile" <<'DOCKER'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
CMD ["sh"]
DOCKER
build berth-test/busybox "$(hash_of /bin/busybox "$work/busybox/Dockerfile")" "$work/busybox"

# node base
node_bin=$(readlink -f "$(command -v node)")
echo "node base: $node_bin ($("$node_bin" --version))"
root="$work/node/rootfs"
mkdir -p "$root/usr/local/bin" "$root/tmp" "$root/etc/ssl/certs" "$root/bin"
cp "$node_bin" "$root/usr/local/bin/node"
# A shell and coreutils (busybox) so HEALTHCHECK CMD-SHELL and docker exec work.
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
for lib in $(ldd "$node_bin" | grep -oE '/[^ ]+'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# npm (self-contained under lib/node_modules/npm) for images that build with npm ci.
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
mkdir -p "$root/usr/local/lib/node_modules" "$root/usr/bin"
cp -r "$npm_dir" "$root/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -sf /bin/busybox "$root/usr/bin/env"
mkdir -p "$root/home/node" "$root/root" && chown 1000:1000 "$root/home/node"
printf 'root:x:0:0::/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
cat > "$work/node/Dockerfile" <<'DOCKER'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
CMD ["node"]
DOCKER
build berth-test/node "$(hash_of "$node_bin" /bin/busybox "$work/node/Dockerfile" "$npm_dir/package.json")" "$work/node"

# web endpoint
mkdir -p "$work/web"
cp test/fixtures/web-backend.mjs "$work/web/server.mjs"
cat > "$work/web/Dockerfile" <<'DOCKER'
FROM berth-test/node
COPY server.mjs /app/server.mjs
EXPOSE 8080
ENTRYPOINT ["node", "/app/server.mjs"]
DOCKER
build berth-test/web "$(hash_of "$work/web/server.mjs" "$work/web/Dockerfile" "$node_bin" /bin/busybox)" "$work/web"

# prometheus (Debian's binary and the libraries ldd lists), for the compose example
prom_bin=$(readlink -f "$(command -v prometheus)")
proot="$work/prometheus/rootfs"
mkdir -p "$proot/bin" "$proot/etc/prometheus" "$proot/prometheus" "$proot/tmp"
cp "$prom_bin" "$proot/bin/prometheus"
for lib in $(ldd "$prom_bin" | grep -oE '/[^ ]+'); do
  mkdir -p "$proot$(dirname "$lib")"
  cp -L "$lib" "$proot$lib"
done
chmod 1777 "$proot/prometheus" "$proot/tmp"
cat > "$work/prometheus/Dockerfile" <<'DOCKER'
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=:9090"]
DOCKER
build berth-test/prometheus "$(hash_of "$prom_bin" "$work/prometheus/Dockerfile")" "$work/prometheus"

# Copies binaries and the libraries ldd lists into a root file system.
with_libs() { # root binary...
  local r=$1; shift
  for bin in "$@"; do
    mkdir -p "$r$(dirname "$bin")"
    cp -L "$bin" "$r$bin"
    for lib in $(ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+'); do
      mkdir -p "$r$(dirname "$lib")"
      cp -L "$lib" "$r$lib"
    done
  done
}

# dnsmasq, for the layer4 example
dns_bin=$(readlink -f "$(command -v dnsmasq)")
droot="$work/dnsmasq/rootfs"
mkdir -p "$droot/tmp" "$droot/etc" "$droot/bin" "$droot/var/run"
with_libs "$droot" "$dns_bin"
ln -sf "$dns_bin" "$droot/bin/dnsmasq"
printf 'root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n' > "$droot/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$droot/etc/group"
cat > "$work/dnsmasq/Dockerfile" <<'DOCKER'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
ENTRYPOINT ["dnsmasq", "--keep-in-foreground"]
DOCKER
build berth-test/dnsmasq "$(hash_of "$dns_bin" "$work/dnsmasq/Dockerfile" <(cd "$droot" && find . | sort))" "$work/dnsmasq"

# PostgreSQL 15, for the layer4 example: the official image's interface (PGDATA,
# POSTGRES_HOST_AUTH_METHOD, "postgres -c ..." as the command, the snakeoil pair).
pg=/usr/lib/postgresql/15
proot="$work/postgres/rootfs"
# What the postgres user owns (COPY --chown): its data, socket and key directories.
pown="$work/postgres/owned"
mkdir -p "$proot/tmp" "$proot/etc/ssl/certs" "$pown/etc/ssl/private" "$pown/var/lib/postgresql/data" "$pown/var/run/postgresql" "$proot/bin" "$proot$pg/lib"
with_libs "$proot" "$pg/bin/postgres" "$pg/bin/initdb" /bin/busybox
for a in sh cat chmod mkdir; do ln -sf busybox "$proot/bin/$a"; done
find "$pg/lib" -maxdepth 1 -name '*.so' -exec cp {} "$proot$pg/lib/" \;
mkdir -p "$proot/usr/share" && cp -r /usr/share/postgresql "$proot/usr/share/postgresql"
mkdir -p "$proot/usr/share/zoneinfo" && cp /usr/share/zoneinfo/UTC "$proot/usr/share/zoneinfo/UTC"
printf 'root:x:0:0::/root:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n' > "$proot/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' > "$proot/etc/group"
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost -keyout "$pown/etc/ssl/private/ssl-cert-snakeoil.key" -out "$proot/etc/ssl/certs/ssl-cert-snakeoil.pem" 2>/dev/null
chmod 600 "$pown/etc/ssl/private/ssl-cert-snakeoil.key"
chmod 700 "$pown/var/lib/postgresql/data"
chmod 1777 "$proot/tmp"
cat > "$proot/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U postgres --auth=trust --locale=C --encoding=UTF8 >/dev/null
  echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"
fi
exec "$@" -c listen_addresses='*'
SH
chmod 755 "$proot/bin/docker-entrypoint.sh"
cat > "$work/postgres/Dockerfile" <<DOCKER
FROM scratch
COPY rootfs/ /
COPY --chown=999:999 owned/ /
ENV PATH=/bin:$pg/bin PGDATA=/var/lib/postgresql/data TZ=UTC
USER 999
ENTRYPOINT ["/bin/docker-entrypoint.sh"]
CMD ["postgres"]
DOCKER
build berth-test/postgres "$(hash_of "$pg/bin/postgres" "$work/postgres/Dockerfile" "$proot/bin/docker-entrypoint.sh" <(cd "$work/postgres" && find . | sort))" "$work/postgres"

# berth itself, from the repository's Dockerfile on the local node base
# (--network host: npm ci reaches the registry through the host).
berth_hash=$(cd "$(dirname "$0")/.." && cat Dockerfile package.json package-lock.json tsconfig.json tsconfig.build.json $(find src -type f | sort) | sha256sum | cut -c1-16)
if [ "$(current_hash berth-test/berth)" = "$berth_hash" ]; then echo "berth-test/berth up to date"; else
  docker build -q --network host --build-arg NODE_IMAGE=berth-test/node --label "org.berth-test.hash=$berth_hash" -t berth-test/berth . >/dev/null
  echo "built berth-test/berth ($(docker image inspect -f '{{.Size}}' berth-test/berth | awk '{printf "%.0f MB", $1/1e6}'))"
fi
