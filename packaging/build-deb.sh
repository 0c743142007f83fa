#!/usr/bin/env bash
# Builds the Debian package of Poplar, target/debian/poplar_<version>_<arch>.deb,
# from the release build: target/release/poplar and the default plugins
# host/build.rs put in target/wasm/wasm32-wasip2/plugin/. Nothing is
# compiled twice: with --no-build (as CI does, after its one
# `cargo build --release --workspace`) it only packs what is there;
# without, it first runs `cargo build --release --locked`.
#
#   packaging/build-deb.sh [--no-build] [--revision N] [--out DIR]
#
# Debian's own dpkg-deb builds the .deb from a staging tree (no cargo-deb
# to install); dpkg-shlibdeps computes the library dependencies. The man
# pages, completions and poplar.toml(5) come from the binary itself
# (`poplar generate`), so they describe exactly the program packed.
set -euo pipefail
cd "$(dirname "$0")/.."

build=yes
revision=1
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=no ;;
    --revision) revision="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
  shift
done

for tool in dpkg-deb dpkg-shlibdeps strip gzip sha256sum; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-deb.sh: $tool is missing: apt-get install dpkg-dev binutils" >&2
    exit 69
  fi
done

target="${CARGO_TARGET_DIR:-target}"
if [ "$build" = yes ]; then
  cargo build --release --locked
fi
binary="$target/release/poplar"
plugins="${POPLAR_PREBUILT_PLUGINS:-$target/wasm/wasm32-wasip2/plugin}"
for f in "$binary" "$plugins"/{storage_maildir,auth_passwd,filter_rules,filter_bayes}.wasm; do
  if [ ! -f "$f" ]; then
    echo "build-deb.sh: $f is missing: run \`cargo build --release\` first (or drop --no-build)" >&2
    exit 66
  fi
done

upstream=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
version="$upstream-$revision"
arch=$(dpkg --print-architecture)
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
maintainer="${DEBFULLNAME:-Poplar developers} <${DEBEMAIL:-poplar@users.noreply.github.com}>"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

out="${out:-$target/debian}"
mkdir -p "$out"
stage="$target/debian/stage-$version"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
umask 022

# The program, stripped of its debug line tables (lintian wants that).
install -D -m 0755 "$binary" "$stage/usr/bin/poplar"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/poplar"

# The default plugins and their SHA-256 (`sha256sum -c SHA256SUMS`).
install -d "$stage/usr/lib/poplar/plugins"
for p in storage_maildir auth_passwd filter_rules filter_bayes; do
  install -m 0644 "$plugins/$p.wasm" "$stage/usr/lib/poplar/plugins/"
done
(cd "$stage/usr/lib/poplar/plugins" && sha256sum -- *.wasm >SHA256SUMS)

install -D -m 0644 packaging/debian/poplar.toml "$stage/etc/poplar/poplar.toml"
install -D -m 0644 packaging/debian/poplar.service "$stage/lib/systemd/system/poplar.service"
install -m 0644 packaging/debian/poplar.socket "$stage/lib/systemd/system/poplar.socket"

# Manual pages and completions, from the binary's own definitions.
gen="$target/debian/generated-$version"
rm -rf "$gen"
"$binary" generate man "$gen/man" >/dev/null
"$binary" generate completions "$gen/completions" >/dev/null
install -d "$stage/usr/share/man/man1" "$stage/usr/share/man/man5"
for page in "$gen"/man/*.1; do
  gzip -9n <"$page" >"$stage/usr/share/man/man1/$(basename "$page").gz"
done
gzip -9n <"$gen/man/poplar.toml.5" >"$stage/usr/share/man/man5/poplar.toml.5.gz"
install -D -m 0644 "$gen/completions/poplar.bash" "$stage/usr/share/bash-completion/completions/poplar"
install -D -m 0644 "$gen/completions/_poplar" "$stage/usr/share/zsh/vendor-completions/_poplar"
install -D -m 0644 "$gen/completions/poplar.fish" "$stage/usr/share/fish/vendor_completions.d/poplar.fish"

# Documentation and the examples the config and manual pages point to.
doc="$stage/usr/share/doc/poplar"
install -d "$doc/examples/grafana" "$doc/examples/prometheus" "$doc/examples/systemd"
gzip -9n <README.md >"$doc/README.md.gz"
install -m 0644 examples/poplar.toml "$doc/examples/"
install -m 0644 examples/grafana/poplar.json "$doc/examples/grafana/"
install -m 0644 examples/prometheus/poplar-rules.yml examples/prometheus/poplar-rules.test.yml \
  "$doc/examples/prometheus/"
install -m 0644 examples/systemd/poplar.service examples/systemd/poplar.socket "$doc/examples/systemd/"
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
year=$(date -u +%Y -d "@$SOURCE_DATE_EPOCH")
{
  echo "poplar ($version) unstable; urgency=medium"
  echo
  echo "  * Built from the Poplar source tree, commit $commit."
  echo
  echo " -- $maintainer  $date"
} | gzip -9n >"$doc/changelog.Debian.gz"
{
  cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: poplar
Comment: /usr/bin/poplar and the plugins in /usr/lib/poplar/plugins are
 built from the Poplar source tree together with these Rust crates (from
 its Cargo.lock), each under the license shown:
EOF
  {
    cargo tree --offline --locked -e normal --prefix none -f '{p} {l}' -p poplar
    cargo tree --offline --locked -e normal --prefix none -f '{p} {l}' --target wasm32-wasip2 \
      -p storage-maildir -p auth-passwd -p filter-rules -p filter-bayes
  } | grep -v -e '^$' -e '(proc-macro)' -e '^poplar ' -e '^poplar-' -e '^storage-maildir ' \
    -e '^auth-passwd ' -e '^filter-' | sed -e 's# (/[^)]*)##' -e 's/ (\*)$//' |
    LC_ALL=C sort -u | sed 's/^/ /'
  cat <<EOF

Files: *
Copyright: $year The Poplar developers
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may
 not use this software except in compliance with the License.
 .
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
} >"$doc/copyright"
find "$doc" -type f -exec chmod 0644 {} +

# This package is built outside Debian's archive: there is no ITP bug for
# its changelog to close.
install -d "$stage/usr/share/lintian/overrides"
echo "poplar: initial-upload-closes-no-bugs" >"$stage/usr/share/lintian/overrides/poplar"
chmod 0644 "$stage/usr/share/lintian/overrides/poplar"

# DEBIAN/: the maintainer scripts, the conffile, checksums, control.
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
echo /etc/poplar/poplar.toml >"$stage/DEBIAN/conffiles"
(cd "$stage" && find usr lib -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

shlibs_dir="$target/debian/shlibs"
rm -rf "$shlibs_dir"
mkdir -p "$shlibs_dir/debian"
printf 'Source: poplar\n\nPackage: poplar\nArchitecture: any\n' >"$shlibs_dir/debian/control"
staged_binary=$(realpath "$stage/usr/bin/poplar")
depends=$(cd "$shlibs_dir" && dpkg-shlibdeps -O "$staged_binary" 2>/dev/null |
  sed -n 's/^shlibs:Depends=//p')
if [ -z "$depends" ]; then
  echo "build-deb.sh: dpkg-shlibdeps found no library dependencies of $binary" >&2
  exit 70
fi
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: poplar
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends, adduser
Section: mail
Priority: optional
Description: POP3 server whose auth, storage and filters are WebAssembly plugins
 Poplar serves mail over POP3 (with STLS) and POP3S, takes delivery over
 LMTP or as an MDA, and runs authentication, mail storage and message
 filtering as sandboxed WebAssembly components that an operator can
 replace or reload without restarting it.
 .
 The package runs it as a systemd service under its own user, with a
 configuration that works as installed: a Maildir per user under
 /var/mail/poplar, a Dovecot-style passwd-file, a self-signed
 certificate, Prometheus metrics on 127.0.0.1:9110.
EOF

deb="$out/poplar_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
rm -rf "$stage" "$gen" "$shlibs_dir"
echo "$deb"
