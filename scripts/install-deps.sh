#!/usr/bin/env bash
# Installs what Hallmark needs on Debian/Ubuntu, idempotently and quietly:
# system packages (only those missing), then npm dependencies (only when the lock file changed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check-node

# python3, make and g++ build the native parts of pkcs11js and better-sqlite3 (node-gyp), and our own
# addon (scripts/build-native). The Workload API tests run workloads under other uids (setpriv, in
# util-linux) and use Debian's gRPC for Python as a client that is not our code. The transparency-log
# tests cross-check our Merkle proofs, tiles and signed notes with Go's golang.org/x/mod/sumdb
# (golang-go builds it offline from golang-golang-x-mod-dev's sources). The PostgreSQL datastore's tests
# start private clusters from Debian's postgresql binaries (initdb/pg_ctl under /usr/lib/postgresql/*/bin,
# as an unprivileged user, on a private port and directory): no system cluster is used.
PACKAGES=(softhsm2 swtpm swtpm-tools tpm2-tools openssl python3 make g++ util-linux python3-grpcio python3-grpc-tools
  golang-go golang-golang-x-mod-dev postgresql)
# On a fresh machine cloud-init or unattended-upgrades often hold the apt/dpkg lock for a while:
# wait for it, up to this many seconds, instead of failing at once.
LOCK_TIMEOUT=${HALLMARK_APT_LOCK_TIMEOUT:-120}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
  fi
  APT_GET=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=${LOCK_TIMEOUT}")

  # DPkg::Lock::Timeout makes apt-get wait for the dpkg lock; apt-get update also takes the lists
  # lock, which some apt versions do not wait for: retry while a lock is the reason, to the same bound.
  deadline=$((SECONDS + LOCK_TIMEOUT))
  told=""
  until err=$("${APT_GET[@]}" update -qq 2>&1 >/dev/null); do
    if ! grep -q "Could not get lock" <<<"$err" || ((SECONDS >= deadline)); then
      echo "$err" >&2
      grep -q "Could not get lock" <<<"$err" && echo "install-deps: the apt lock was still held after ${LOCK_TIMEOUT} s (HALLMARK_APT_LOCK_TIMEOUT); is another apt-get or unattended-upgrades still running?" >&2
      exit 1
    fi
    [ -n "$told" ] || { echo "install-deps: waiting up to ${LOCK_TIMEOUT} s for the apt lock (another apt-get or unattended-upgrades is running)" >&2; told=1; }
    sleep 1
  done
  echo "install-deps: installing ${missing[*]}"
  "${APT_GET[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when node_modules is absent or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

# The project's own N-API addon (SO_PEERCRED), rebuilt only when its sources changed.
scripts/build-native
