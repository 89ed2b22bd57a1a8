#!/usr/bin/env bash
# Interop test: an independent gRPC implementation (Python grpcio, stubs generated here from the
# project's .proto files) speaks Fabric's gossip comm protocol with our node.
#   bash interop/run.sh [interop_test.py options, e.g. --targets rust --only probe]
# Env: PYTHON (default python3), INTEROP_REQUIRE_NODE=1 (fail instead of skip while
# `fabric-gossip node` does not exist), INTEROP_SKIP_BUILD=1 (use the binary as built).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv=interop/.venv
gen=interop/_gen
start=$(date +%s)

fail_setup() { echo "interop setup failed: $*"; echo "0 passed, 1 failed"; exit 1; }

# 1. Python environment from interop/requirements.txt
py=${PYTHON:-python3}
if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$venv"
  "$py" -m venv "$venv" || fail_setup "cannot create a venv with $py"
fi
timeout 600 "$venv/bin/python" -m pip install -q --disable-pip-version-check -r interop/requirements.txt \
  || fail_setup "pip install -r interop/requirements.txt"

# 2. Python stubs generated now from the project's own .proto files
rm -rf "$gen" && mkdir -p "$gen"
mapfile -t protos < <(cd proto/protos && find . -name '*.proto' | sed 's|^\./||' | sort)
(cd proto/protos && "$root/$venv/bin/python" -m grpc_tools.protoc -I. \
  --python_out="$root/$gen" --grpc_python_out="$root/$gen" "${protos[@]}") \
  || fail_setup "grpc_tools.protoc on proto/protos"
echo "interop: stubs generated from ${protos[*]}; setup took $(( $(date +%s) - start ))s"

# 3. Our node
# INTEROP_PROFILE=release (or ci, or any profile) builds (or, with INTEROP_SKIP_BUILD=1, takes)
# that profile's binary; CI takes the one its `cargo test --profile ci --all-features` built,
# since a build without those features would compile the node again.
profile="${INTEROP_PROFILE:-debug}"
profile_flag=()
[ "$profile" = debug ] || profile_flag=(--profile "$profile")
if [ -z "${INTEROP_SKIP_BUILD:-}" ]; then
  cargo build -q "${profile_flag[@]}" -p fabric-gossip-cli || fail_setup "cargo build -p fabric-gossip-cli"
fi
node_bin="${CARGO_TARGET_DIR:-$root/target}/$profile/fabric-gossip"

# 4. The test: every wait inside has a deadline; the whole run has a watchdog
args=()
[ -n "${INTEROP_REQUIRE_NODE:-}" ] && args+=(--require-node)
export INTEROP_GEN_DIR="$root/$gen" GRPC_VERBOSITY=NONE PYTHONDONTWRITEBYTECODE=1
set +e
timeout 300 "$venv/bin/python" interop/interop_test.py --node-bin "$node_bin" "${args[@]}" "$@"
rc=$?
set -e
echo "interop: total $(( $(date +%s) - start ))s"
exit $rc
