#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, the Rust tests (unit, integration,
# end to end through the emulator and, for audit shipping, moto's S3 server), the Python tests (boto3 against the emulator; grpcio and
# grpcurl against the gateway; the Kubernetes manifests), buf lint, hadolint and checkov. It
# installs the Python and Node tools it needs into the checkout (.venv/, .venv-checkov/,
# tools/node_modules/); Rust and Python 3 must be on PATH, and Debian's postgresql package
# installed (a throwaway server is started for the approvals test).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "starting a throwaway PostgreSQL (the approvals store shared by two gateways)"
# Never skipped: without PostgreSQL the suite fails here, in CI (CI=true) and anywhere else.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "PostgreSQL is not installed: apt-get install postgresql (.ci/run does; CI=${CI:-unset})" >&2
  exit 1
fi
pg_dir=$(mktemp -d)
trap 'bash scripts/throwaway-postgres.sh stop "$pg_dir"' EXIT
DATASHARE_GATEWAY_TEST_POSTGRES=$(bash scripts/throwaway-postgres.sh start "$pg_dir")
export DATASHARE_GATEWAY_TEST_POSTGRES
echo "$DATASHARE_GATEWAY_TEST_POSTGRES"

step "installing Python tools into .venv"
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt -r tools/requirements.txt
# checkov pins its own boto3: a venv of its own.
python3 -m venv .venv-checkov
.venv-checkov/bin/pip install --quiet --disable-pip-version-check -r tools/checkov-requirements.txt

# The S3 shipping tests start moto's server (an S3-protocol server) on a free port each, and read
# the shipped objects back with boto3.
export DATASHARE_GATEWAY_TEST_MOTO="$PWD/.venv/bin/moto_server"
export DATASHARE_GATEWAY_TEST_PYTHON="$PWD/.venv/bin/python"

step "installing buf and the cert-manager and Prometheus Operator schemas into tools/node_modules"
(cd tools && npm ci --no-audit --no-fund --loglevel=error)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
# The production binary (the image's build): no emulator feature.
cargo clippy --locked --no-default-features --bin datashare-gateway -- -D warnings

step "cargo test"
cargo test --locked --workspace --no-fail-fast

step "buf lint"
tools/node_modules/.bin/buf lint

step "hadolint"
.venv/bin/hadolint Dockerfile

step "checkov (the Kubernetes manifests; skipped checks and why: .checkov.yaml)"
.venv-checkov/bin/checkov --framework kubernetes -d deploy/kubernetes --quiet

step "parliament (deploy/aws/: the SCP and the IAM policies; any finding fails)"
# parliament exits 1 and prints one line per finding, 0 and nothing when there are none;
# --minimum_severity INFO shows every finding. --files, not --file: 1.6.4 refuses --file whenever
# stdin is not a terminal, as in CI. A trust policy has no Resource (IAM refuses one) and parliament
# requires one (duo-labs/parliament#229): it is linted with the role it belongs to as its Resource.
# PYTHONWARNINGS: parliament imports pkg_resources, which warns that it is deprecated.
for policy in deploy/aws/*.json; do
  case "$policy" in
    *-trust.json)
      linted=$(.venv/bin/python -c 'import json, sys
doc = json.load(open(sys.argv[1]))
for s in doc["Statement"]:
    s.setdefault("Resource", "arn:aws:iam::*:role/datashare-gateway")
print(json.dumps(doc))' "$policy")
      args=(--string "$linted") ;;
    *) args=(--files "$policy") ;;
  esac
  rc=0
  found=$(PYTHONWARNINGS="ignore::UserWarning" .venv/bin/parliament --minimum_severity INFO "${args[@]}" </dev/null) || rc=$?
  if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
    printf '%s: parliament exited %s\n%s\n' "$policy" "$rc" "$found" >&2
    exit 1
  fi
  echo "$policy: no findings"
done

step "pytest (boto3 against the emulator; grpcio and grpcurl against the gateway; deploy/kubernetes and deploy/aws)"
# The binary under test is the one cargo test just built.
export DATASHARE_GATEWAY_BIN="$PWD/target/debug/datashare-gateway"
PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m pytest -q tests/python
