#!/usr/bin/env bash
# Lints deploy/ offline: hadolint on every Dockerfile, the compose file against the Compose Spec,
# kubernetes-validate on the core Kubernetes objects, check-jsonschema on the KubeRay objects
# (deploy/k8s/crds/), then what those objects embed (pod templates, Serve and training configs).
# Runs every check, prints one line per check, exits 1 if any failed.
#   scripts/lint_deploy.sh [REPO_ROOT]      (default: the repository this script lives in)
# Tools come from REPO_ROOT/.venv/bin when it exists, else from PATH. K8S_VERSION picks the
# Kubernetes schema version (default 1.35.0, one that kubernetes-validate ships).
set -uo pipefail

ROOT=$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)
if [ -x "$ROOT/.venv/bin/python" ]; then
  PATH="$ROOT/.venv/bin:$PATH"
fi
K8S_VERSION=${K8S_VERSION:-1.35.0}
DEPLOY="$ROOT/deploy"
failures=0

check() { # check NAME COMMAND...: run it, keep its output only when it fails
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "ok    $name"
  else
    echo "FAIL  $name"
    sed 's/^/      /' <<<"$out"
    failures=$((failures + 1))
  fi
}

for tool in hadolint check-jsonschema kubernetes-validate python; do
  command -v "$tool" >/dev/null || { echo "FAIL  $tool not found (make setup installs it)"; exit 1; }
done

shopt -s nullglob
dockerfiles=("$DEPLOY"/docker/*.Dockerfile)
core=("$DEPLOY"/k8s/core/*.yaml "$DEPLOY"/k8s/secrets.example.yaml)
variants=("$DEPLOY"/k8s/cpu "$DEPLOY"/k8s/gpu)
if [ ${#dockerfiles[@]} -eq 0 ] || [ ! -d "$DEPLOY/k8s/core" ]; then
  echo "FAIL  no Dockerfiles or manifests under $DEPLOY"
  exit 1
fi

# 1. Dockerfiles
for f in "${dockerfiles[@]}"; do
  check "hadolint ${f#"$ROOT"/}" hadolint --config "$DEPLOY/.hadolint.yaml" "$f"
done

# 2. Compose (the Compose Spec schema that check-jsonschema vendors: no network, no Docker)
check "compose-spec deploy/compose.yaml" \
  check-jsonschema --builtin-schema vendor.compose-spec "$DEPLOY/compose.yaml"

# 3. Core Kubernetes objects (strict: unknown fields fail), including the ConfigMaps of the variants
configmaps=()
for dir in "${variants[@]}"; do configmaps+=("$dir"/training-config.yaml); done
check "kubernetes-validate $K8S_VERSION (${#core[@]} core files, ${#configmaps[@]} ConfigMaps)" \
  kubernetes-validate --strict --quiet --no-warn -k "$K8S_VERSION" "${core[@]}" "${configmaps[@]}"

# 4. KubeRay objects against the v1 CRD schemas in deploy/k8s/crds/
for kind in raycluster rayjob rayservice; do
  objects=()
  for dir in "${variants[@]}"; do objects+=("$dir/$kind"*.yaml); done
  if [ ${#objects[@]} -eq 0 ]; then
    echo "FAIL  no $kind manifests under deploy/k8s/{cpu,gpu}"
    failures=$((failures + 1))
    continue
  fi
  check "check-jsonschema $kind (${#objects[@]} files)" \
    check-jsonschema --schemafile "$DEPLOY/k8s/crds/$kind.schema.json" "${objects[@]}"
done

# 5. What they embed: pod templates (kubernetes-validate), serveConfigV2 and Serve configs (Ray
#    Serve's schema), training configs (schemas/training-config.json)
embedded=()
for dir in "${variants[@]}"; do embedded+=("$dir"/*.yaml); done
embedded+=("$DEPLOY"/serve/*.yaml "$DEPLOY"/training/*.yaml)
check "embedded pod templates, Serve and training configs (${#embedded[@]} files)" \
  python "$DEPLOY/check_embedded.py" --k8s-version "$K8S_VERSION" --repo "$ROOT" "${embedded[@]}"

# 6. Every MAPPER_* variable deploy/ sets is one the code reads (platform/settings)
envfiles=("$DEPLOY"/compose.yaml "$DEPLOY"/env.example "$DEPLOY"/docker/*.Dockerfile "$DEPLOY"/k8s/*/*.yaml "$DEPLOY"/k8s/*.yaml "$DEPLOY"/serve/*.yaml)
check "MAPPER_* variables set in deploy/ are read by the code (${#envfiles[@]} files)" \
  python "$DEPLOY/check_env.py" "${envfiles[@]}"

# 7. Secure by default: TLS for every gRPC service and its clients, a token on serving
check "TLS on every gRPC service and client, a token on serving" \
  python "$DEPLOY/check_secure.py" "$DEPLOY"

if [ "$failures" -gt 0 ]; then
  echo "deploy lint: $failures check(s) failed"
  exit 1
fi
echo "deploy lint: all checks passed"
