#!/bin/sh
# The Ferry demo, end to end on one machine: a coordinator, two agents (temp
# state and store dirs), a closure pushed (built by real Nix when this
# machine has it, else assembled from NARs), a config deployed to both
# agents, a second config that fails its health check and is rolled back,
# then the audit log. Every step is the `ferry` command a user would type.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
ferry() { node "$here/bin/ferry" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
pids=""
cleanup() {
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
export FERRY_CONFIG_DIR="$work/config" FERRY_DATA_DIR="$work/coordinator" XDG_CACHE_HOME="$work/cache"
system="$(uname -m)-linux"
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

# Waits until every named agent reports `phase` for `config` (or fails after 60 s).
wait_for() {
  phase=$1 config=$2; shift 2
  node - "$phase" "$config" "$@" <<'EOF'
const { execFileSync } = require('child_process');
const [phase, config, ...names] = process.argv.slice(2);
const deadline = Date.now() + 60000;
for (;;) {
  const agents = JSON.parse(execFileSync(process.execPath, [process.env.FERRY_BIN, 'agents', 'ls', '--json']));
  const done = names.every((name) => agents.some((a) => a.name === name && a.phase === phase && (a.desiredConfig === config)));
  if (done) break;
  if (Date.now() > deadline) { console.error(`timed out waiting for ${names.join(', ')} to be ${phase}`); process.exit(1); }
  execFileSync('sleep', ['0.3']);
}
EOF
}
export FERRY_BIN="$here/bin/ferry"

step "1. Start a coordinator (SQLite + castore in $FERRY_DATA_DIR, HTTP and QUIC on 127.0.0.1:$port)"
ferry coordinator init --name demo --url "http://127.0.0.1:$port" | sed 's/^/   /'
# Started with node directly (not the ferry function), so $! is the process to stop at the end.
node "$here/bin/ferry" coordinator serve --listen "127.0.0.1:$port" > "$work/coordinator.log" 2>&1 &
pids="$pids $!"
until grep -q 'QUIC data plane' "$work/coordinator.log" 2>/dev/null; do sleep 0.2; done
sed 's/^/   /' "$work/coordinator.log"

step "2. Build a closure and push it (only what the coordinator lacks is sent)"
if [ -z "${FERRY_DEMO_NO_NIX:-}" ] && command -v nix-build >/dev/null 2>&1 && command -v busybox >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  say "Nix is installed: building demo/demo.nix (v1 healthy, v2 with a failing health check)"
  export NIX_CONFIG="build-users-group =
substituters =
sandbox = false
experimental-features = nix-command"
  bb=$(readlink -f "$(command -v busybox)")
  good=$(nix-build "$here/demo/demo.nix" --argstr busyboxPath "$bb" --argstr version 1 --no-out-link)
  bad=$(nix-build "$here/demo/demo.nix" --argstr busyboxPath "$bb" --argstr version 2 --no-out-link)
  ferry push "$good" | sed 's/^/   /'
  ferry push "$bad" | sed 's/^/   /'
  say "pushing v1 again sends nothing:"
  ferry push "$good" | sed 's/^/   /'
else
  say "Nix is not installed here: assembling the same kind of closure as NARs (the agents never need Nix either)"
  fake() { node -e 'const c=require("crypto").createHash("sha256").update(process.argv[1]).digest();const a="0123456789abcdfghijklmnpqrsvwxyz";console.log("/nix/store/"+[...c.subarray(0,32)].map(b=>a[b%32]).join("")+"-"+process.argv[1])' "$1"; }
  for version in 1 2; do
    content=$(fake "ferry-demo-content-$version"); app=$(fake "ferry-demo-app-$version")
    mkdir -p "$work/build/content-$version/share" "$work/build/app-$version/bin"
    echo "hello from ferry demo v$version" > "$work/build/content-$version/share/message"
    printf '#!/bin/sh\necho "serving: $(cat "$FERRY_STORE_DIR/%s/share/message")" > "$FERRY_STATE_DIR/service.txt"\necho "activated config $FERRY_CONFIG_ID"\n' "$(basename "$content")" > "$work/build/app-$version/bin/activate"
    if [ "$version" = 1 ]; then printf '#!/bin/sh\ngrep -q serving "$FERRY_STATE_DIR/service.txt"\n' > "$work/build/app-$version/bin/health"
    else printf '#!/bin/sh\necho "health check: service answered HTTP 503" >&2\nexit 1\n' > "$work/build/app-$version/bin/health"; fi
    chmod 555 "$work/build/app-$version/bin/activate" "$work/build/app-$version/bin/health"
    ferry nar dump "$work/build/content-$version" > "$work/content-$version.nar"
    ferry nar dump "$work/build/app-$version" > "$work/app-$version.nar"
    ferry push --nar "$work/content-$version.nar" "$content" | sed 's/^/   /'
    ferry push --nar "$work/app-$version.nar" --reference "$content" "$app" | sed 's/^/   /'
    if [ "$version" = 1 ]; then good=$app; else bad=$app; fi
  done
fi

step "3. Enroll two agents with one join string (each gets its own key, state dir and store dir)"
join=$(ferry tokens create --uses 2 --auto-approve --label site=demo --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).join')
say "join string: $join"
say "(tls=pinned: the agents talk HTTPS to the coordinator's port and trust only the certificate fp names)"
for name in web-1 web-2; do
  ferry agent enroll "$join" --state-dir "$work/$name" --store-dir "$work/$name/store" --name "$name" | head -1 | sed 's/^/   /'
  node "$here/bin/ferry" agent run --state-dir "$work/$name" --poll 1 --health-retry-delay 200 > "$work/$name.log" 2>&1 &
  pids="$pids $!"
done
ferry agents ls | sed 's/^/   /'

step "4. Submit config v1 to graph 'web' and assign both agents to it"
v1=$(ferry config submit web --target "$system=$good" --activate bin/activate --health bin/health --health-retries 1 -m "v1: first rollout" --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).configId')
ferry agents assign web-1 web-2 web | sed 's/^/   /'
say "agents fetch the closure over QUIC, verify every byte (BLAKE3), materialize it, switch generations, activate, health-check…"
wait_for active "$v1" web-1 web-2
ferry agents status | sed 's/^/   /'
say "web-1 says: $(cat "$work/web-1/service.txt")"
say "its store dir: $(ls "$work/web-1/store" | tr '\n' ' ')"

step "5. Submit config v2, whose health check fails: agents roll back to v1 on their own"
v2=$(ferry config submit web --target "$system=$bad" --activate bin/activate --health bin/health --health-retries 1 -m "v2: broken health check" --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).configId')
wait_for rolled-back "$v2" web-1 web-2
ferry agents status | sed 's/^/   /'
say "on web-1 (local view):"
ferry agent generations --state-dir "$work/web-1" | sed 's/^/     /'
say "web-1 still serves: $(cat "$work/web-1/service.txt")"

step "6. Roll the graph back to v1 (the agents are already there), then read and verify the audit log"
ferry graph rollback web --to "$v1" | sed 's/^/   /'
ferry graph log web | sed 's/^/   /'
ferry audit log | sed 's/^/   /'
ferry audit verify | sed 's/^/   /'

step "Done. Everything above ran against a real coordinator and real agents; nothing is left behind."
