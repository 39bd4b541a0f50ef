# berth as a container. Multi-stage: build with npm ci + tsc, run with production
# dependencies only. NODE_IMAGE is any image with node (and npm, for the build
# stage): the official Node 24 LTS slim image on Debian 13 by default; the tests pass
# a base built locally from the node and npm they run on (scripts/test-images.sh,
# Node 24 in CI), as no registry is reachable there. berth also runs on Node 20.18+.
#   docker build -t berth .
#   docker build --network host --build-arg NODE_IMAGE=berth-test/node -t berth:local .
ARG NODE_IMAGE=node:24-trixie-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN node --version && npm run build && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# Admin (metrics, health) on every interface of the container; flags and a config
# file (-c) override it.
ENV BERTH_ADMIN=0.0.0.0:9901 NODE_ENV=production
EXPOSE 9901
# Non-root. Docker discovery needs the socket readable: mount it read-only and add
# its group (docker run --group-add $(stat -c %g /var/run/docker.sock) ...).
USER 1000:1000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "require('http').get('http://127.0.0.1:9901/healthz',r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"]
ENTRYPOINT ["node", "--max-semi-space-size=2", "--initial-heap-size=64", "/app/dist/main.js"]
CMD ["run"]
