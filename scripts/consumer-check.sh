#!/usr/bin/env bash
# The consumer check: the package as npm would publish it, installed in an app outside
# the repo with registry packages only, must
#   (a) run a job end to end on plain Node (>= 22.19, no loader): Migrations.run on a
#       fresh database, enqueue, a worker runs it, the database shows it completed;
#   (b) type-check: the app's own tsc, strict, skipLibCheck false (the emitted .d.ts
#       are checked too);
#   (c) with only public imports (`from "effect-jobs"`, no deep imports);
# (d) its `effect-jobs` bin runs (and without @effect/platform-node says it needs it);
# and on a Node older than 22.19 (when the machine has one) the same app must exit
# non-zero with the package's version message.
#
#   bash scripts/consumer-check.sh     (DATABASE_URL: a server where it may create and
#                                       drop a database; default the machine's Postgres)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

server="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
work="$(mktemp -d)"
db="effect_jobs_consumer_$$"
created=0
cleanup() {
  if [ "$created" = 1 ]; then psql -q "$server" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "consumer check: FAILED: $*" >&2; exit 1; }
# Runs a step quietly; on failure shows its output.
quiet() {
  local log="$work/step.log"
  if ! "$@" >"$log" 2>&1; then cat "$log" >&2; fail "$*"; fi
}

# The tarball, built by `prepack` (npm run build).
quiet npm pack --pack-destination "$work"
tarball="$(ls "$work"/effect-jobs-*.tgz)"
echo "packed $(basename "$tarball")"

# The app, outside the repo, with the versions of the repo's lockfile.
lock() { node -p "require('./package-lock.json').packages['node_modules/$1'].version"; }
app="$work/app"
mkdir -p "$app"
cp scripts/consumer/package.json scripts/consumer/tsconfig.json scripts/consumer/app.ts scripts/consumer/shims.d.ts "$app/"
(
  cd "$app"
  quiet npm install --no-audit --no-fund --prefer-offline "$tarball" \
    "effect@$(cd "$repo" && lock effect)" "@effect/sql-pg@$(cd "$repo" && lock @effect/sql-pg)" \
    "typescript@$(cd "$repo" && lock typescript)" "@types/node@$(cd "$repo" && lock @types/node)"
)
pkg="$app/node_modules/effect-jobs"
echo "installed in $app: effect-jobs $(node -p "require('$pkg/package.json').version"), effect $(node -p "require('$app/node_modules/effect/package.json').version")"

# One copy of Effect: effect-jobs must use the app's (a peer), not bring its own.
[ ! -e "$pkg/node_modules" ] || fail "effect-jobs installed dependencies of its own: $(ls "$pkg/node_modules")"
# The declaration files import ./X.js, never ./X.ts (TS5097 in a consumer).
if grep -rEn "(from|import)\s*\(?\s*[\"']\.{1,2}/[^\"']*\.ts[\"']" "$pkg/dist" --include='*.d.ts'; then
  fail "relative .ts specifiers in the emitted .d.ts"
fi

# (c) public imports only.
# (the package's entry points: "effect-jobs" and the subpath "effect-jobs/dashboard"; a deep
# import such as effect-jobs/dist/... is not public)
if grep -nE "(from|import\()\s*[\"']effect-jobs/" "$app/app.ts" | grep -vE "[\"']effect-jobs/dashboard[\"']"; then
  fail "app.ts imports below effect-jobs' entry points"
fi
grep -qE "from [\"']effect-jobs[\"']" "$app/app.ts" || fail "app.ts does not import effect-jobs"

# (b) the app's own tsc: strict, skipLibCheck false. Then the same tsc emits app.js.
(cd "$app" && quiet ./node_modules/.bin/tsc --noEmit -p . && quiet ./node_modules/.bin/tsc -p .)
echo "(b) tsc --noEmit (strict, skipLibCheck false): ok; (c) imports: \"effect-jobs\" and \"effect-jobs/dashboard\" only"

# (a) plain Node, a database of its own.
psql -q "$server" -c "CREATE DATABASE $db" >/dev/null
created=1
out="$(cd "$app" && DATABASE_URL="${server%/*}/$db" node out/app.js 2>&1)" || { echo "$out" >&2; fail "node out/app.js on Node $(node --version)"; }
echo "(a) node $(node --version) out/app.js: $out"
case "$out" in
  *"$pkg/migrations/"*) ;;
  *) fail "the migrations were not read from the installed package ($pkg/migrations/)" ;;
esac

# (d) the command line (package.json "bin"): npm links it; without the optional peer
# @effect/platform-node it says so in one line and exits 1; with it, it reads the
# database the app migrated.
bin="$app/node_modules/.bin/effect-jobs"
[ -x "$bin" ] || fail "npm did not link the effect-jobs bin"
set +e
binout="$(cd "$app" && "$bin" --version 2>&1)"
code=$?
set -e
[ "$code" = 1 ] && [ "$binout" = "effect-jobs: the command line needs @effect/platform-node next to effect-jobs: npm install @effect/platform-node" ] ||
  { echo "$binout" >&2; fail "effect-jobs without @effect/platform-node: exit $code"; }
(cd "$app" && quiet npm install --no-audit --no-fund --prefer-offline "@effect/platform-node@$(cd "$repo" && lock @effect/platform-node)")
binout="$(cd "$app" && DATABASE_URL="${server%/*}/$db" "$bin" migrate --status 2>&1)" || { echo "$binout" >&2; fail "effect-jobs migrate --status"; }
case "$binout" in
  *"0 pending in schema effect_jobs"*) ;;
  *) echo "$binout" >&2; fail "effect-jobs migrate --status did not list the app's migrations applied" ;;
esac
echo "(d) effect-jobs bin: the platform-node message without it; with it: $(echo "$binout" | tail -1)"

# A Node older than 22.19, if this machine has one: the version message, exit non-zero.
old=""
for candidate in $(which -a node 2>/dev/null) /usr/bin/node /usr/local/bin/node; do
  [ -x "$candidate" ] || continue
  if "$candidate" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a<22||(a===22&&b<19)?0:1)' 2>/dev/null; then
    old="$candidate"; break
  fi
done
if [ -n "$old" ]; then
  set +e
  oldout="$(cd "$app" && DATABASE_URL="${server%/*}/$db" "$old" out/app.js 2>&1)"
  code=$?
  set -e
  [ "$code" != 0 ] || fail "on Node $("$old" --version) the app exited 0"
  case "$oldout" in
    *"effect-jobs needs Node.js >= 22.19 (Effect 4's floor); this is Node $("$old" --version)"*) ;;
    *) echo "$oldout" >&2; fail "on Node $("$old" --version) no version message" ;;
  esac
  echo "old node $("$old" --version): exit $code, $(echo "$oldout" | grep -m1 -o 'Error: effect-jobs needs.*')"
else
  echo "no Node older than 22.19 on this machine: the version message is not checked"
fi
echo "consumer check: ok"
