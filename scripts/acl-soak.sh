#!/usr/bin/env bash
# ACL property soak on every core: builds the library's tests in release, then runs the ACL
# property tests (`retrieve::acl_props`, embedded backend) in N processes at once, each with its
# own fixed seed (PROPTEST_RNG_SEED = SEED + i, so a failure can be replayed) and CASES cases.
#
#   scripts/acl-soak.sh [N] [CASES] [SEED]      (defaults: one process per core, 1000, 1)
#
# Prints each process's result; exits non-zero if any failed. The binary can also be copied to
# a larger machine (it links only glibc): `scripts/acl-soak.sh --build-only` prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
exe=$(cargo test --release --lib --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')
if [[ "${1:-}" == "--build-only" ]]; then
  echo "$exe"
  exit 0
fi
n=${1:-$(nproc)}
cases=${2:-1000}
seed=${3:-1}
logs=$(mktemp -d)
start=$(date +%s)
for i in $(seq 1 "$n"); do
  PROPTEST_RNG_SEED=$((seed + i)) PROPTEST_CASES=$cases \
    "$exe" retrieve::acl_props --skip on_milvus --test-threads 1 > "$logs/$i.log" 2>&1 &
done
failed=0
wait || true
for i in $(seq 1 "$n"); do
  if grep -q '^test result: ok' "$logs/$i.log"; then
    echo "seed $((seed + i)): ok ($cases cases per test)"
  else
    echo "seed $((seed + i)): FAILED"; cat "$logs/$i.log"; failed=1
  fi
done
echo "acl-soak: $n processes × $cases cases in $(( $(date +%s) - start )) s; logs in $logs"
exit $failed
