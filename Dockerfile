# Hallmark server image: Node 20 on Debian bookworm with SoftHSM2 (development HSM) and
# tpm2-tools. Real deployments mount their vendor's PKCS#11 module and set hsm.modulePath.
FROM node:20-bookworm-slim AS build
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json tsconfig.server.json ./
COPY src ./src
COPY fixtures ./fixtures
# The server only (tsconfig.server.json: src/): the benchmarks import test helpers, which the
# image does not carry. test/ops/packaging.test.ts checks that every import resolves to a copied file.
RUN npx tsc -p tsconfig.server.json
RUN npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends softhsm2 openssl tpm2-tools ca-certificates \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/fixtures ./fixtures
COPY package.json ./
COPY bin ./bin
RUN useradd --system --uid 10001 --home /var/lib/hallmark hallmark && mkdir -p /var/lib/hallmark && chown hallmark /var/lib/hallmark
USER hallmark
ENV HALLMARK_DATA_DIR=/var/lib/hallmark
EXPOSE 8443
ENTRYPOINT ["node", "bin/hallmark.js"]
CMD ["server", "--listen", "0.0.0.0:8443"]
