#!/usr/bin/env bash
# install.sh: installs a quick-migrate release tarball (npm run release) on a hostmaster or web front,
# upgrades it (keeping the previous version to roll back to), rolls back, and uninstalls.
#
#   install.sh TARBALL [--agent] [--controller] [--enable] [options]
#   install.sh --rollback [options]
#   install.sh --uninstall [options]
#
# See usage() below, or run it with --help.
set -euo pipefail
umask 022

PROG=$(basename "$0")
PREFIX=/opt/quick-migrate
BINDIR=/usr/local/bin
ETC=/etc/quick-migrate
UNITDIR=/etc/systemd/system
RUN_AS=aegir
AGENT=0
CONTROLLER=0
ENABLE=0
FORCE=0
MODE=install
TARBALL=""
UNIT=quick-migrate-agent.service
BINS=(quick-migrate quick-migrate-agent)
# the paths the release's unit and example configs are written for; replaced by the options'
UNIT_PREFIX=/opt/quick-migrate/current
UNIT_ROOT=/var/aegir/platforms
UNIT_STATE=/var/lib/quick-migrate

usage() {
  cat <<EOF
Usage:
  $PROG TARBALL [--agent] [--controller] [--enable] [options]   install or upgrade
  $PROG --rollback [options]                                   switch back to the previous version
  $PROG --uninstall [options]                                  remove what $PROG installed

Installs the release in TARBALL (quick-migrate-<version>.tar.gz) as PREFIX/<version>, points
PREFIX/current at it, and links quick-migrate and quick-migrate-agent into BINDIR. An upgrade keeps the
version it replaces as PREFIX/previous (older ones are removed); a running agent keeps its version
until it is restarted. Installing the same tarball again changes nothing.

  --agent        this host is a web front: ETC/agent.yaml from the example (only if there is none) and
                 the systemd unit UNITDIR/$UNIT (ExecStart, config path, user and the
                 agent.yaml's root and stateDir put in)
  --controller   this host is the hostmaster: ETC/controller.yaml from the example (only if there is none)
  --enable       also systemctl daemon-reload and systemctl enable --now the agent (with --agent)

A config that exists is never replaced: compare it with PREFIX/current/deploy/*.example.yaml after an
upgrade. ETC/tls is made mode 0750, group of --user, for the TLS keys (deploy/tls/make-certs.sh).

--uninstall disables and removes the unit, the links, PREFIX, and the configs it made that are
unchanged since; never a config that was edited, never the agent's state dir (/var/lib/quick-migrate).
It reads what to remove from PREFIX/.manifest, so it needs only --prefix.

Options:
  --prefix DIR   where versions go (default $PREFIX)
  --bindir DIR   where the commands are linked (default $BINDIR)
  --etc DIR      the config folder (default $ETC)
  --unitdir DIR  where the unit goes (default $UNITDIR)
  --user NAME    the user the agent runs as (default $RUN_AS, Aegir's): the unit's User= and Group=, and
                 the group that may read the configs and ETC/tls
  --force        replace an installed version of the same number made from another tarball
  -h, --help     this text

Example (a web front):
  $PROG quick-migrate-0.2.0.tar.gz --agent
  vi $ETC/agent.yaml; deploy/tls/make-certs.sh ... (see the README)
  $PROG quick-migrate-0.2.0.tar.gz --agent --enable
EOF
}

die() {
  echo "$PROG: $*" >&2
  exit 2
}
say() { echo "$PROG: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --agent) AGENT=1; shift ;;
    --controller) CONTROLLER=1; shift ;;
    --enable) ENABLE=1; shift ;;
    --force) FORCE=1; shift ;;
    --rollback) MODE=rollback; shift ;;
    --uninstall) MODE=uninstall; shift ;;
    --prefix | --bindir | --etc | --unitdir | --user)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --prefix) PREFIX=$2 ;; --bindir) BINDIR=$2 ;; --etc) ETC=$2 ;; --unitdir) UNITDIR=$2 ;; --user) RUN_AS=$2 ;;
      esac
      shift 2
      ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *)
      [ -z "$TARBALL" ] || die "one tarball at a time ($TARBALL, $1)"
      TARBALL=$1
      shift
      ;;
  esac
done

for d in PREFIX BINDIR ETC UNITDIR; do
  v=${!d}
  case "$v" in /*) ;; *) die "--${d,,} must be an absolute path, not '$v'" ;; esac
  [[ $v != *$'\n'* && $v != *' '* ]] || die "--${d,,} '$v': no spaces or newlines, please"
  v=${v%/}
  [ -n "$v" ] || die "--${d,,} must not be /"
  printf -v "$d" '%s' "$v"
done
[[ $RUN_AS =~ ^[a-z_][a-z0-9_-]*$ ]] || die "--user '$RUN_AS' is not a user name"
MANIFEST=$PREFIX/.manifest

systemd_running() { command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }
sha() { sha256sum -- "$1" | cut -d' ' -f1; }

# ---- the manifest: what was installed outside PREFIX, one "kind sha256|- path" a line --------------

declare -A M_KIND=() M_SHA=()
M_ORDER=()
read_manifest() {
  [ -f "$MANIFEST" ] || return 0
  local kind sum path
  while read -r kind sum path; do
    [ -n "$path" ] || continue
    if [ -z "${M_KIND[$path]:-}" ]; then M_ORDER+=("$path"); fi
    M_KIND[$path]=$kind
    M_SHA[$path]=$sum
  done <"$MANIFEST"
}
# records a path once: the first sha256 recorded stays (a config is "ours" while it matches what we wrote)
record() { # kind sha path
  if [ -z "${M_KIND[$3]:-}" ]; then
    M_ORDER+=("$3")
    M_KIND[$3]=$1
    M_SHA[$3]=$2
  elif [ "$1" = unit ]; then
    M_SHA[$3]=$2
  fi
}
write_manifest() {
  local tmp=$MANIFEST.tmp p
  : >"$tmp"
  for p in ${M_ORDER[@]+"${M_ORDER[@]}"}; do printf '%s %s %s\n' "${M_KIND[$p]}" "${M_SHA[$p]}" "$p" >>"$tmp"; done
  mv -f -- "$tmp" "$MANIFEST"
}

# points LINK at TARGET by renaming a new link over it: a reader sees the old or the new, never none
switch_link() { # target link
  ln -sfn -- "$1" "$2.new"
  mv -fT -- "$2.new" "$2"
}

lock_prefix() {
  mkdir -p -- "$PREFIX"
  exec 9>"$PREFIX/.lock"
  if command -v flock >/dev/null 2>&1; then flock -n 9 || die "another $PROG is working on $PREFIX"; fi
}

# ---- rollback ------------------------------------------------------------------------------------

if [ "$MODE" = rollback ]; then
  [ -z "$TARBALL" ] || die "--rollback takes no tarball"
  [ -L "$PREFIX/current" ] || die "nothing installed in $PREFIX"
  [ -L "$PREFIX/previous" ] || die "no previous version in $PREFIX to roll back to"
  lock_prefix
  cur=$(readlink -- "$PREFIX/current")
  prev=$(readlink -- "$PREFIX/previous")
  [ -d "$PREFIX/$prev" ] || die "$PREFIX/previous points at $prev, which is not there"
  switch_link "$prev" "$PREFIX/current"
  switch_link "$cur" "$PREFIX/previous"
  say "current: $prev; previous: $cur (--rollback again switches back to it)"
  systemd_running && systemctl -q is-active quick-migrate-agent 2>/dev/null &&
    say "the agent still runs $cur: restart it when no migration is running (systemctl restart quick-migrate-agent)"
  exit 0
fi

# ---- uninstall -----------------------------------------------------------------------------------

if [ "$MODE" = uninstall ]; then
  [ -z "$TARBALL" ] || die "--uninstall takes no tarball"
  [ -f "$MANIFEST" ] || die "nothing installed by $PROG in $PREFIX (no $MANIFEST)"
  lock_prefix
  read_manifest
  for p in ${M_ORDER[@]+"${M_ORDER[@]}"}; do
    if [ "${M_KIND[$p]}" = unit ] && [ -e "$p" ] && systemd_running; then
      systemctl disable --now "$(basename -- "$p")" || say "could not disable $(basename -- "$p") (removing it all the same)"
    fi
  done
  # the reverse order of installing: files before the folders that hold them
  for ((i = ${#M_ORDER[@]} - 1; i >= 0; i--)); do
    p=${M_ORDER[$i]}
    case "${M_KIND[$p]}" in
      link)
        if [ -L "$p" ] && [[ $(readlink -- "$p") == "$PREFIX"/* ]]; then rm -f -- "$p" && say "removed $p"; fi
        ;;
      unit)
        if [ -e "$p" ]; then rm -f -- "$p" && say "removed $p"; fi
        ;;
      config)
        if [ ! -e "$p" ]; then
          :
        elif [ "$(sha "$p")" = "${M_SHA[$p]}" ]; then
          rm -f -- "$p" && say "removed $p (as installed)"
        else
          say "kept $p: it was edited"
        fi
        ;;
      dir)
        if [ ! -d "$p" ]; then
          :
        elif rmdir -- "$p" 2>/dev/null; then
          say "removed $p"
        else
          say "kept $p: not empty"
        fi
        ;;
    esac
  done
  systemd_running && systemctl daemon-reload
  rm -rf -- "$PREFIX"
  say "removed $PREFIX"
  exit 0
fi

# ---- install: every refusal happens here, before anything changes --------------------------------

[ -n "$TARBALL" ] || { usage >&2; die "needs a tarball (npm run release makes one)"; }
[ -f "$TARBALL" ] && [ -r "$TARBALL" ] || die "$TARBALL is not a readable file"
[ "$ENABLE" = 0 ] || [ "$AGENT" = 1 ] || die "--enable enables the agent's unit: give --agent too"
for tool in tar sha256sum; do command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"; done

entries=$(tar -tzf "$TARBALL") || die "$TARBALL is not a gzipped tar"
top=$(printf '%s\n' "$entries" | sed -n '1s|/.*||p')
[[ $top =~ ^quick-migrate-([0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?)$ ]] || die "$TARBALL is not a quick-migrate release (its folder is '$top')"
VERSION=${BASH_REMATCH[1]}
# one folder, nothing that climbs out of it
while IFS= read -r e; do
  [[ $e == "$top" || $e == "$top"/* ]] || die "$TARBALL holds $e, outside $top/"
  [[ /$e/ != */../* ]] || die "$TARBALL holds $e"
done <<<"$entries"
TAR_SHA=$(sha "$TARBALL")

if id -u "$RUN_AS" >/dev/null 2>&1; then
  GROUP=$(id -gn "$RUN_AS")
else
  GROUP=""
  [ "$AGENT" = 0 ] && [ "$CONTROLLER" = 0 ] ||
    say "warning: there is no user $RUN_AS (Aegir makes it): the unit runs as User=$RUN_AS; the configs stay root's until it exists (or give --user)"
fi
command -v node >/dev/null 2>&1 || say "warning: node is not on the PATH: quick-migrate needs Node.js >= 20.5"

for b in "${BINS[@]}"; do
  l=$BINDIR/$b
  if [ -L "$l" ]; then
    [[ $(readlink -- "$l") == "$PREFIX"/* ]] || die "$l links to $(readlink -- "$l"), not into $PREFIX: remove it first"
  elif [ -e "$l" ]; then
    die "$l exists and is not a link into $PREFIX: remove it first"
  fi
done

lock_prefix
read_manifest
if [ -d "$PREFIX/$VERSION" ] && [ "$(cat -- "$PREFIX/$VERSION/.tarball-sha256" 2>/dev/null)" != "$TAR_SHA" ] && [ "$FORCE" = 0 ]; then
  die "$PREFIX/$VERSION is installed from another tarball than $TARBALL (--force replaces it)"
fi

# ---- the version ---------------------------------------------------------------------------------

if [ -d "$PREFIX/$VERSION" ] && [ "$(cat -- "$PREFIX/$VERSION/.tarball-sha256" 2>/dev/null)" = "$TAR_SHA" ]; then
  say "$VERSION is installed in $PREFIX/$VERSION already"
else
  incoming=$(mktemp -d "$PREFIX/.incoming.XXXXXX")
  trap 'rm -rf -- "$incoming"' EXIT
  tar -xzf "$TARBALL" -C "$incoming" --no-same-owner
  packed=$(sed -n '/^  "version": /{s/^  "version": "\(.*\)",$/\1/p;q}' "$incoming/$top/package.json")
  [ "$packed" = "$VERSION" ] || die "$TARBALL: its package.json says version '$packed', its folder $VERSION"
  chmod -R go-w -- "$incoming/$top"
  printf '%s\n' "$TAR_SHA" >"$incoming/$top/.tarball-sha256"
  chmod 0755 "$incoming"
  if [ -d "$PREFIX/$VERSION" ]; then
    # --force: the old files go aside in one rename, the new ones come in with another
    mv -T -- "$PREFIX/$VERSION" "$incoming/replaced"
    say "replacing $PREFIX/$VERSION (--force)"
  fi
  mv -T -- "$incoming/$top" "$PREFIX/$VERSION"
  rm -rf -- "$incoming"
  trap - EXIT
  say "installed $VERSION in $PREFIX/$VERSION"
fi

was=$(readlink -- "$PREFIX/current" 2>/dev/null || true)
if [ "$was" != "$VERSION" ]; then
  switch_link "$VERSION" "$PREFIX/current"
  if [ -n "$was" ] && [ -d "$PREFIX/$was" ]; then
    switch_link "$was" "$PREFIX/previous"
    say "current: $VERSION; previous: $was ($PROG --rollback switches back)"
  else
    say "current: $VERSION"
  fi
fi
# versions other than current and previous go (only folders this script made: they hold .tarball-sha256)
keep_prev=$(readlink -- "$PREFIX/previous" 2>/dev/null || true)
for d in "$PREFIX"/*/; do
  d=${d%/}
  v=$(basename -- "$d")
  [ -f "$d/.tarball-sha256" ] && [ ! -L "$d" ] || continue
  [ "$v" = "$VERSION" ] || [ "$v" = "$keep_prev" ] && continue
  rm -rf -- "$d"
  say "removed the older version $v"
done

# ---- commands on the PATH ------------------------------------------------------------------------

mkdir -p -- "$BINDIR"
for b in "${BINS[@]}"; do
  switch_link "$PREFIX/current/bin/$b" "$BINDIR/$b"
  record link - "$BINDIR/$b"
done
write_manifest

# ---- configs: made from the examples when there are none; never replaced ----------------------------

# as root, files and folders the agent's user must read get its group
to_group() { # path
  if [ -n "$GROUP" ] && [ "$(id -u)" = 0 ]; then chgrp -- "$GROUP" "$1"; fi
}

make_dir() { # dir mode
  if [ ! -d "$1" ]; then
    mkdir -p -- "$1"
    chmod "$2" -- "$1"
    record dir - "$1"
  fi
}

install_config() { # example name
  local dest=$ETC/$2
  if [ -e "$dest" ]; then
    say "kept $dest (compare it with $PREFIX/current/deploy/$1)"
    return 0
  fi
  cp -- "$PREFIX/current/deploy/$1" "$dest.new"
  chmod 0640 -- "$dest.new"
  to_group "$dest.new"
  mv -f -- "$dest.new" "$dest"
  record config "$(sha "$dest")" "$dest"
  say "made $dest from the example: edit it"
}

if [ "$AGENT" = 1 ] || [ "$CONTROLLER" = 1 ]; then
  make_dir "$ETC" 0755
  if [ ! -d "$ETC/tls" ]; then
    make_dir "$ETC/tls" 0750
    to_group "$ETC/tls"
  fi
  [ "$AGENT" = 0 ] || install_config agent.example.yaml agent.yaml
  [ "$CONTROLLER" = 0 ] || install_config controller.example.yaml controller.yaml
  write_manifest
fi

# ---- the agent's unit ----------------------------------------------------------------------------

sed_value() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
# a top-level key's value in the agent's config, when it is a plain path
config_path() { # key
  sed -n "/^$1:/{s/^$1:[[:space:]]*[\"']\{0,1\}\(\/[^\"'#[:space:]]*\).*/\1/p;q}" "$ETC/agent.yaml" 2>/dev/null || true
}

if [ "$AGENT" = 1 ]; then
  root=$(config_path root)
  state=$(config_path stateDir)
  rw=${root:-$UNIT_ROOT}
  # the state dir is systemd's StateDirectory (/var/lib/quick-migrate) unless the config says otherwise
  [ -z "$state" ] || [ "$state" = "$UNIT_STATE" ] || rw="$rw $state"
  mkdir -p -- "$UNITDIR"
  unit=$UNITDIR/$UNIT
  sed -e "s|$UNIT_PREFIX|$(sed_value "$PREFIX/current")|g" \
    -e "s|--config /etc/quick-migrate/agent.yaml|--config $(sed_value "$ETC/agent.yaml")|" \
    -e "s|^User=.*|User=$RUN_AS|" -e "s|^Group=.*|Group=${GROUP:-$RUN_AS}|" \
    -e "s|^ReadWritePaths=.*|ReadWritePaths=$(sed_value "$rw")|" \
    "$PREFIX/current/deploy/systemd/$UNIT" >"$unit.new"
  chmod 0644 -- "$unit.new"
  if [ -f "$unit" ] && cmp -s -- "$unit" "$unit.new"; then
    rm -f -- "$unit.new"
  else
    mv -f -- "$unit.new" "$unit"
    say "installed $unit (ReadWritePaths=$rw); change it with systemctl edit ${UNIT%.service}"
    systemd_running && systemctl daemon-reload
  fi
  record unit "$(sha "$unit")" "$unit"
  write_manifest
fi

# ---- enable --------------------------------------------------------------------------------------

if [ "$ENABLE" = 1 ]; then
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable --now "${UNIT%.service}"
    say "enabled and started ${UNIT%.service}"
  else
    say "systemd is not running here: not enabled. Where it runs: systemctl daemon-reload && systemctl enable --now ${UNIT%.service}"
  fi
fi
if [ -n "$was" ] && [ "$was" != "$VERSION" ] && systemd_running && systemctl -q is-active "${UNIT%.service}" 2>/dev/null; then
  say "the agent still runs $was: restart it when no migration is running (systemctl restart ${UNIT%.service})"
fi
exit 0
