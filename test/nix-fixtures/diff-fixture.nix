# Two closures, `before` and `after`, built without nixpkgs (a static busybox
# as builder, as fixture.nix does), whose differences exercise every rule of
# `nix store diff-closures`: a version bump, a package removed and one added,
# a size change without a version change, an output suffix (-dev), a name
# with no version gaining one (ε → 1.0), two versions of one name of which
# one goes, a rebuild within 8 KiB (not listed), and a shared path.
{ busyboxPath, salt ? "" }:
let
  busyboxDir = builtins.path {
    path = /. + dirOf busyboxPath;
    name = "ferry-fixture-busybox";
    filter = p: t: baseNameOf p == baseNameOf busyboxPath;
  };
  busybox = "${busyboxDir}/${baseNameOf busyboxPath}";
  # A package of `size` bytes of data (distinct per `fill`), naming `deps` and itself.
  pkg = name: fill: size: deps: derivation {
    inherit name salt;
    system = builtins.currentSystem;
    builder = busybox;
    args = [ "sh" "-e" "-c" ''
      bb=${busybox}
      $bb mkdir -p $out/lib
      $bb seq ${toString fill} ${toString (fill + size)} | $bb head -c ${toString size} > $out/lib/data
      echo "self=$out deps=${builtins.concatStringsSep " " (map toString deps)} salt=$salt" > $out/lib/refs
      echo "${name}" > $out/lib/name
    '' ];
  };
  shared = pkg "ferry-diff-shared-1.0" 1 3000 [];
  python312 = pkg "ferry-diff-python3-3.12.2" 2 20000 [];
  opensslDev = pkg "ferry-diff-openssl-3.0.13-dev" 3 15000 [];
  before = rec {
    zlib = pkg "ferry-diff-zlib-1.3" 10 60000 [];
    openssl = pkg "ferry-diff-openssl-3.0.13" 20 200000 [ zlib ];
    gone = pkg "ferry-diff-gone-1.0" 30 10000 [];
    tool = pkg "ferry-diff-tool" 40 5000 [];
    tiny = pkg "ferry-diff-tiny-1.0" 50 1000 [];
    python311 = pkg "ferry-diff-python3-3.11.8" 60 20000 [];
    top = pkg "ferry-diff-system-1" 70 100 [ zlib openssl opensslDev gone tool tiny python311 python312 shared ];
  };
  after = rec {
    zlib = pkg "ferry-diff-zlib-1.3.1" 11 60010 [];
    openssl = pkg "ferry-diff-openssl-3.0.13" 21 240000 [ zlib ];
    added = pkg "ferry-diff-new-2.0" 31 9000 [];
    tool = pkg "ferry-diff-tool-1.0" 40 5000 [];
    tiny = pkg "ferry-diff-tiny-1.0" 51 1100 [];
    top = pkg "ferry-diff-system-2" 71 100 [ zlib openssl opensslDev added tool tiny python312 shared ];
  };
in { before = before.top; after = after.top; }
