# A small closure built without nixpkgs: every builder is a static busybox
# added to the store with builtins.path. It covers every NAR feature Ferry
# must reproduce exactly: a plain-file output, nested directories, an
# executable, an empty file, an empty directory, relative and dangling
# symlinks, a self-reference and a reference to another path.
{ busyboxPath, salt ? "" }:
let
  # Busybox picks its applet from argv[0], which Nix sets to the builder's
  # store path ("<hash>-busybox" would not be recognised), so the binary is
  # added inside a directory and invoked as .../busybox.
  busyboxDir = builtins.path {
    path = /. + dirOf busyboxPath;
    name = "ferry-fixture-busybox";
    filter = p: t: baseNameOf p == baseNameOf busyboxPath;
  };
  busybox = "${busyboxDir}/${baseNameOf busyboxPath}";
  mk = name: script: derivation {
    inherit name salt;
    system = builtins.currentSystem;
    builder = busybox;
    args = [ "sh" "-e" "-c" ''
      bb=${busybox}
      $bb mkdir -p "$TMPDIR/bin"
      for a in mkdir ln echo chmod cat printf touch seq head dd; do $bb ln -s $bb "$TMPDIR/bin/$a"; done
      export PATH="$TMPDIR/bin"
      ${script}
    '' ];
  };
  greeting = mk "ferry-fixture-greeting" ''
    echo "hello from ferry $salt" > $out
  '';
  lib = mk "ferry-fixture-lib" ''
    mkdir -p $out/lib/deep/er/still $out/share/doc $out/empty-dir $out/bin
    echo "greeting is at ${greeting}" > $out/share/doc/README
    touch $out/lib/empty-file
    printf 'nested\n' > $out/lib/deep/er/still/leaf.txt
    printf '#!/bin/sh\necho lib at %s\n' "$out" > $out/bin/lib-tool
    chmod +x $out/bin/lib-tool
    ln -s ../share/doc $out/lib/docs
    ln -s /nonexistent/dangling/target $out/lib/dangling
    ln -s lib-tool $out/bin/tool-link
    head -c 70000 /dev/zero > $out/lib/zeros.bin
  '';
  app = mk "ferry-fixture-app" ''
    mkdir -p $out/bin $out/etc
    printf '#!/bin/sh\n. ${lib}/share/doc/README\necho app %s\n' "$out" > $out/bin/app
    chmod 0555 $out/bin/app
    echo "self=$out" > $out/etc/self-reference
    ln -s ${lib}/bin/lib-tool $out/bin/lib-tool
  '';
in { inherit greeting lib app; }
