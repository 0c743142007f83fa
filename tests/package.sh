#!/usr/bin/env bash
# The Debian package, installed for real (run by .ci/run after the tests,
# as root, on a machine where PID 1 is not systemd): builds the .deb from
# the release build already made (packaging/build-deb.sh --no-build),
# checks it with lintian, installs it with dpkg, checks the configuration
# and the units, starts the installed server as the unit does (user poplar,
# CAP_NET_BIND_SERVICE only, `ExecStart=`) inside a network namespace of
# its own (the packaged configuration listens on ports 110 and 995), adds
# a user with `poplar pw hash`, delivers with `poplar deliver`, fetches
# over POP3S with curl verifying the installed certificate, upgrades to a
# package with a new version (the edited configuration, the users and
# the mail stay), removes and purges it.
#
# It changes the machine (a package, a system user, /etc, /var): it undoes
# all of that when it ends, however it ends, and it refuses to run where
# a poplar package it did not install is present.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "package.sh: run as root (it installs the package)" >&2
  exit 77
fi

step() { printf '\n== %s\n' "$*"; }
fail() { echo "package.sh: FAILED: $*" >&2; exit 1; }

# What this script needs: lintian for the package, util-linux's setpriv
# and unshare and iproute2 for the sandboxed start, curl for POP3S.
need=()
for p in lintian curl iproute2 util-linux adduser dpkg-dev binutils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/poplar-package.XXXXXX)
marker=/var/lib/poplar-package-test
server_pid=

# Leaves the machine as it was: stops the server, purges the package,
# removes the mail, the system user and what this script made.
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -e "$marker" ]; then
    dpkg --purge poplar >/dev/null 2>&1 || true
    rm -rf /var/mail/poplar /etc/poplar
    if getent passwd poplar >/dev/null; then deluser --system --quiet poplar >/dev/null 2>&1 || true; fi
    if getent group poplar >/dev/null; then delgroup --system --quiet poplar >/dev/null 2>&1 || true; fi
    rm -f "$marker"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A previous run that was killed leaves its marker: clean up after it.
# Anything else named poplar belongs to someone: stop.
if [ -e "$marker" ]; then
  step "cleaning up after an interrupted run"
  cleanup
  work=$(mktemp -d /tmp/poplar-package.XXXXXX)
fi
if dpkg-query -W poplar >/dev/null 2>&1 || getent passwd poplar >/dev/null; then
  echo "package.sh: a poplar package or user is already on this machine; this test" \
    "installs, upgrades and purges the package: remove it first" >&2
  trap - EXIT
  rm -rf "$work"
  exit 1
fi

step "building the packages from the release build"
deb1=$(packaging/build-deb.sh --no-build --revision 1 --out "$work")
deb2=$(packaging/build-deb.sh --no-build --revision 2 --out "$work")
ls -l "$deb1" "$deb2"

step "lintian"
if ! lintian --fail-on error --tag-display-limit 0 "$deb1" 2>"$work/lintian.err"; then
  cat "$work/lintian.err" >&2
  fail "lintian reports errors"
fi

step "dpkg -i $(basename "$deb1")"
touch "$marker"
dpkg -i "$deb1"
[ "$(dpkg-query -W -f='${Status} ${Version}' poplar)" = "install ok installed 0.1.0-1" ] ||
  fail "poplar 0.1.0-1 is not installed"

step "files, owners and modes"
getent passwd poplar | grep -q ':/var/lib/poplar:/usr/sbin/nologin$' || fail "no system user poplar"
expect_stat() {
  local got
  got=$(stat -c '%U:%G %a' "$1")
  [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
}
expect_stat /etc/poplar "root:root 755"
expect_stat /etc/poplar/poplar.toml "root:poplar 640"
expect_stat /etc/poplar/auth "root:poplar 750"
expect_stat /etc/poplar/auth/passwd "root:poplar 640"
expect_stat /etc/poplar/tls "root:root 755"
expect_stat /etc/poplar/tls/cert.pem "root:poplar 644"
expect_stat /etc/poplar/tls/key.pem "root:poplar 640"
expect_stat /var/mail/poplar "poplar:poplar 750"
expect_stat /var/lib/poplar "poplar:poplar 750"
expect_stat /var/lib/poplar/bayes "poplar:poplar 700"
expect_stat /var/cache/poplar "poplar:poplar 700"
dpkg-query -W -f='${Conffiles}\n' poplar | grep -q '^ /etc/poplar/poplar.toml ' ||
  fail "/etc/poplar/poplar.toml is not a conffile"
(cd /usr/lib/poplar/plugins && sha256sum --quiet -c SHA256SUMS) || fail "plugins differ from SHA256SUMS"
for page in poplar poplar-serve poplar-pw-hash poplar-mailbox-expunge poplar.toml; do
  man -w "$page" >/dev/null || fail "no manual page $page"
done
[ -s /usr/share/bash-completion/completions/poplar ] &&
  [ -s /usr/share/zsh/vendor-completions/_poplar ] &&
  [ -s /usr/share/fish/vendor_completions.d/poplar.fish ] || fail "completions missing"

step "poplar check-config /etc/poplar/poplar.toml"
poplar check-config /etc/poplar/poplar.toml

step "systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/poplar.service /lib/systemd/system/poplar.socket

# The unit's ExecStart=, User=, Group= and capabilities, read from the
# installed unit so the test starts what systemd would.
unit=/lib/systemd/system/poplar.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
unit_user=$(sed -n 's/^User=//p' "$unit")
unit_group=$(sed -n 's/^Group=//p' "$unit")
[ "$(sed -n 's/^AmbientCapabilities=//p' "$unit")" = CAP_NET_BIND_SERVICE ] ||
  fail "the unit's capabilities changed: update this test"

# Starts the installed server in a new network namespace, as the unit's
# user with only CAP_NET_BIND_SERVICE and the unit's umask, and waits for
# its listeners.
start_server() {
  : >"$work/server.out"
  unshare --net -- sh -c '
    ip link set lo up
    umask 0077
    exec setpriv --reuid="$1" --regid="$2" --init-groups \
      --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
      --bounding-set=-all,+net_bind_service -- $3' \
    start "$unit_user" "$unit_group" "$exec_start" >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  for _ in $(seq 1 200); do
    grep -q 'listening on \[::\]:995' "$work/server.out" && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$work/server.out" "$work/server.err" >&2
  fail "the installed server did not start"
}
stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || fail "the server exited with an error: $(cat "$work/server.err")"
  server_pid=
}
# Runs a command inside the server's network namespace.
in_netns() { nsenter --target "$server_pid" --net -- "$@"; }

step "starting the installed server as $unit_user: $exec_start"
start_server
grep 'listening on' "$work/server.out"
[ "$(ps -o user= -p "$server_pid")" = poplar ] || fail "the server does not run as poplar"

step "adding alice with poplar pw hash"
echo "alice:$(echo 'correct horse' | poplar pw hash --password-stdin)" >>/etc/poplar/auth/passwd

step "delivering with poplar deliver (as poplar)"
printf 'From: bob@example.org\nSubject: installed\n\nDelivered by the package test.\n' |
  setpriv --reuid=poplar --regid=poplar --init-groups -- \
    poplar deliver --config /etc/poplar/poplar.toml --user alice --from bob@example.org

step "fetching over POP3S with curl as an ordinary user, checking the installed certificate"
fetch() {
  in_netns setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
    curl -sS --fail --cacert /etc/poplar/tls/cert.pem -u 'alice:correct horse' "$@"
}
fetch pop3s://localhost:995/ | tee "$work/list"
grep -q '^1 [0-9]' "$work/list" || fail "LIST shows no message"
fetch pop3s://localhost:995/1 >"$work/message"
grep -q 'Delivered by the package test.' "$work/message" || fail "RETR did not return the message"
grep -q '^X-Spam-Bayes: untrained' "$work/message" || fail "the packaged filter chain did not run"
if in_netns curl -sS --cacert /etc/poplar/tls/cert.pem -u 'alice:wrong' pop3s://localhost:995/ 2>/dev/null; then
  fail "a wrong password logged in"
fi
in_netns curl -sS http://127.0.0.1:9110/metrics >"$work/metrics"
grep -q '^poplar_logins_total{result="ok"} 2$' "$work/metrics" || fail "metrics do not count the logins"
# Port 110 without STLS: allowed from loopback (an IPv4 client of the
# [::] listener included), as the packaged plaintext_auth says.
reply=$(in_netns bash -c 'exec 3<>/dev/tcp/127.0.0.1/110; read -r _ <&3
  printf "USER alice\r\n" >&3; read -r _ <&3
  printf "PASS correct horse\r\n" >&3; read -r reply <&3
  printf "QUIT\r\n" >&3; echo "$reply"')
echo "port 110, USER/PASS from 127.0.0.1: $reply"
case "$reply" in "+OK Logged in"*) ;; *) fail "plain login from loopback refused" ;; esac
stop_server

step "upgrading to $(basename "$deb2"): the edited configuration stays"
sed -i 's/^# hostname = "mail.example.org"$/hostname = "mail.package-test.example"/' /etc/poplar/poplar.toml
grep -q '^hostname = "mail.package-test.example"$' /etc/poplar/poplar.toml || fail "could not edit the config"
cert_before=$(sha256sum </etc/poplar/tls/cert.pem)
dpkg -i "$deb2"
[ "$(dpkg-query -W -f='${Version}' poplar)" = 0.1.0-2 ] || fail "the upgrade did not happen"
grep -q '^hostname = "mail.package-test.example"$' /etc/poplar/poplar.toml ||
  fail "the upgrade lost the operator's configuration"
[ ! -e /etc/poplar/poplar.toml.dpkg-new ] || fail "the upgrade left poplar.toml.dpkg-new"
[ "$(sha256sum </etc/poplar/tls/cert.pem)" = "$cert_before" ] || fail "the upgrade replaced the certificate"
grep -q '^alice:' /etc/poplar/auth/passwd || fail "the upgrade lost the users"
expect_stat /etc/poplar/poplar.toml "root:poplar 640"
start_server
fetch pop3s://localhost:995/1 >"$work/message"
grep -q 'Delivered by the package test.' "$work/message" || fail "mail lost in the upgrade"
# The edited hostname is in the greeting's APOP timestamp, on port 110.
greeting=$(in_netns bash -c 'exec 3<>/dev/tcp/127.0.0.1/110; head -n 1 <&3')
echo "port 110: $greeting"
case "$greeting" in
  "+OK "*"@mail.package-test.example>"*) ;;
  *) fail "the upgraded server does not serve the edited configuration" ;;
esac
stop_server

step "dpkg -r: the program goes, configuration and mail stay"
dpkg -r poplar
[ ! -e /usr/bin/poplar ] || fail "/usr/bin/poplar is still there"
[ -f /etc/poplar/poplar.toml ] && [ -f /etc/poplar/auth/passwd ] && [ -d /var/mail/poplar/alice ] ||
  fail "remove deleted configuration or mail"

step "dpkg -P: configuration and data go, the mail stays"
dpkg -P poplar 2>&1 | tee "$work/purge"
for gone in /etc/poplar /var/lib/poplar /var/cache/poplar; do
  [ ! -e "$gone" ] || fail "purge left $gone"
done
[ -d /var/mail/poplar/alice ] || fail "purge deleted the users' mail"
grep -q 'kept /var/mail/poplar' "$work/purge" || fail "purge did not say it kept the mail"

step "the package test passed"
