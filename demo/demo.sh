#!/bin/sh
# The Ferry demo, as far as Ferry goes today: NARs and the content-addressed
# store, driven through the `ferry` command exactly as a user would. It grows
# into the end-to-end fleet demo (coordinator + agents) as those land.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
ferry() { node "$here/bin/ferry" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
data="$work/data"

step "1. A file tree shaped like a Nix store path: a program, a library, a symlink"
mkdir -p "$work/app/bin" "$work/app/lib"
printf '#!/bin/sh\necho "hello from ferry"\n' > "$work/app/bin/hello"
chmod 755 "$work/app/bin/hello"
head -c 200000 /dev/zero | tr '\0' 'x' > "$work/app/lib/libdata.so"
ln -s ../lib/libdata.so "$work/app/bin/data-link"
find "$work/app" | sed "s|$work/||"

step "2. Serialise it as a NAR (the archive format Nix hashes and ships)"
ferry nar dump "$work/app" > "$work/app.nar"
ferry nar hash "$work/app.nar"
ferry nar ls -l "$work/app.nar"

if command -v nix-store >/dev/null 2>&1; then
  step "   … and check it against real Nix: nix-store --dump of the same tree"
  store_path=$(nix-store --add "$work/app")
  if nix-store --dump "$store_path" | cmp -s - "$work/app.nar"; then
    echo "identical to nix-store --dump $store_path"
  else
    echo "DIFFERENT from nix-store --dump: please report this" >&2
    exit 1
  fi
else
  store_path=/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-app
  echo "(Nix is not installed here, so no comparison with nix-store --dump; Ferry never needs it)"
fi

step "3. Ingest the NAR into a castore: files become BLAKE3-addressed blobs, directories become objects"
ferry castore ingest --data-dir "$data" --store-path "$store_path" "$work/app.nar"
ferry castore stat --data-dir "$data"

step "4. A refused NAR: one byte of an entry name changed to '/' — nothing is stored"
node -e '
const fs = require("fs"); const nar = fs.readFileSync(process.argv[1]);
const at = nar.indexOf(Buffer.from("hello")); nar[at + 2] = 0x2f; fs.writeFileSync(process.argv[2], nar);
' "$work/app.nar" "$work/evil.nar"
ferry castore ingest --data-dir "$data" --store-path "${store_path}-evil" "$work/evil.nar" || echo "(refused, as it should be)"

step "5. Export it back: byte-identical, so the NarHash matches"
ferry castore export --data-dir "$data" "$store_path" > "$work/exported.nar"
cmp "$work/app.nar" "$work/exported.nar" && echo "exported NAR is byte-identical to the original"

step "6. fsck re-verifies every object; then we corrupt a blob on disk and fsck names it"
ferry castore fsck --data-dir "$data"
blob=$(find "$data/castore/blobs" -type f ! -name '*.obao' | head -n 1)
chmod u+w "$blob"
printf 'X' | dd of="$blob" bs=1 seek=1000 conv=notrunc status=none
ferry castore fsck --data-dir "$data" || echo "(fsck found the corruption, as it should)"

step "7. GC: everything is reachable from the registered store path, so nothing would go"
ferry castore gc --dry-run --data-dir "$data"

printf '\nDone. Next in Ferry: a coordinator, agents, and pushes from Nix pipelines (see the issues).\n'
