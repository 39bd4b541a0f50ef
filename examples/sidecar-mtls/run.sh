#!/usr/bin/env bash
# The sidecar deployment, step by step (see README.md). BERTH_IMAGE and APP_IMAGE
# pick the images; CERTS is where `berth certs` writes.
set -euo pipefail
cd "$(dirname "$0")"
BERTH_IMAGE=${BERTH_IMAGE:-berth}
APP_IMAGE=${APP_IMAGE:-berth-test/web}
CERTS=${CERTS:-$PWD/certs}
PREFIX=${PREFIX:-sidecar}
PORT=${PORT:-8443}

# 1. A CA, the app's server certificate and a client certificate, made by berth itself.
berth() { docker run --rm --user "$(id -u):$(id -g)" -v "$CERTS:/certs" "$BERTH_IMAGE" "$@"; }
mkdir -p "$CERTS"
[ -f "$CERTS/ca/ca.pem" ] || berth certs ca --out /certs/ca --cn "shop CA"
[ -f "$CERTS/app.pem" ] || berth certs issue --ca /certs/ca --out /certs --name app --san DNS:localhost,IP:127.0.0.1 --server
[ -f "$CERTS/frontend.pem" ] || berth certs issue --ca /certs/ca --out /certs --name frontend --san URI:spiffe://shop/frontend --client
[ -f "$CERTS/intruder.pem" ] || berth certs issue --ca /certs/ca --out /certs --name intruder --san URI:spiffe://shop/intruder --client
cp "$CERTS/ca/ca.pem" "$CERTS/ca.pem"

# 2. The app; it publishes the sidecar's port, since they share one network namespace.
docker run -d --name "$PREFIX-app" -p "127.0.0.1:$PORT:8443" -e NAME=app "$APP_IMAGE"

# 3. berth in the app's network namespace, as the user that owns the keys (mode 0600).
docker run -d --name "$PREFIX-berth" --network "container:$PREFIX-app" --user "$(id -u):$(id -g)" \
  -v "$CERTS:/certs:ro" -v "$PWD/berth.yaml:/etc/berth.yaml:ro" "$BERTH_IMAGE" run -c /etc/berth.yaml
