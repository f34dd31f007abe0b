# The demo's closure, built by real Nix without nixpkgs: a static busybox
# (Debian's busybox-static) is the only builder. `version` 1 is healthy;
# version 2's health check fails, so agents roll it back.
{ busyboxPath, version ? "1" }:
let
  busyboxDir = builtins.path {
    path = /. + dirOf busyboxPath;
    name = "ferry-demo-busybox";
    filter = p: t: baseNameOf p == baseNameOf busyboxPath;
  };
  busybox = "${busyboxDir}/${baseNameOf busyboxPath}";
  mk = name: script: derivation {
    inherit name version;
    system = builtins.currentSystem;
    builder = busybox;
    args = [ "sh" "-e" "-c" ''
      bb=${busybox}
      $bb mkdir -p "$TMPDIR/bin"
      for a in mkdir echo chmod cat printf; do $bb ln -s $bb "$TMPDIR/bin/$a"; done
      export PATH="$TMPDIR/bin"
      ${script}
    '' ];
  };
  content = mk "ferry-demo-content-${version}" ''
    mkdir -p $out/share
    echo "hello from ferry demo v${version}" > $out/share/message
  '';
in mk "ferry-demo-app-${version}" ''
  mkdir -p $out/bin
  printf '#!/bin/sh\necho "serving: $(cat "$FERRY_STORE_DIR/${baseNameOf content}/share/message")" > "$FERRY_STATE_DIR/service.txt"\necho "activated config $FERRY_CONFIG_ID"\n' > $out/bin/activate
  ${if version == "1" then ''
    printf '#!/bin/sh\ngrep -q serving "$FERRY_STATE_DIR/service.txt"\n' > $out/bin/health
  '' else ''
    printf '#!/bin/sh\necho "health check: service answered HTTP 503" >&2\nexit 1\n' > $out/bin/health
  ''}
  chmod 555 $out/bin/activate $out/bin/health
''
