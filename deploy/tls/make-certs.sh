#!/usr/bin/env bash
# make-certs.sh: a private CA and the certificates quick-migrate's mTLS needs, with openssl only.
#
#   make-certs.sh [options] OUTDIR CONTROLLER-NAME [FRONT[=ADDRESS] ...]
#   make-certs.sh [options] --client-only OUTDIR CLIENT-NAME ...
#
# See usage() below, or run it with --help.
set -euo pipefail

PROG=$(basename "$0")
CA_DAYS=3650
DAYS=825
FORCE=0
NEW_CA_ASKED=0
CA_DIR=""
CLIENT_ONLY=0
NAME_RE='^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'
DNS_RE='^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'
IPV4_RE='^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$'

usage() {
  cat <<EOF
Usage:
  $PROG [options] OUTDIR CONTROLLER-NAME [FRONT[=ADDRESS] ...]
  $PROG [options] --client-only OUTDIR CLIENT-NAME ...

Makes, in OUTDIR:
  ca.pem, ca-key.pem                  a private CA (EC P-256, $CA_DAYS days), unless one is there already
                                      or --ca-dir names one
  controller.pem, controller-key.pem  the controller's client certificate (CN = CONTROLLER-NAME,
                                      extendedKeyUsage clientAuth)
  FRONT.pem, FRONT-key.pem            one server certificate per web front (CN = FRONT, subjectAltName
                                      DNS:FRONT plus IP:ADDRESS or DNS:ADDRESS, extendedKeyUsage serverAuth,
                                      and clientAuth: \`quick-migrate-agent health\` presents it to its own agent)

With --client-only, makes only CLIENT-NAME.pem and CLIENT-NAME-key.pem (clientAuth) for each name, with
the existing CA (of OUTDIR, or of --ca-dir). Such a client may call an agent's health service; it may
run operations only when its name is in the agent's allowedClients.

FRONT is the name the controller config gives the front (fronts: [{name: FRONT, ...}]): the controller
checks each agent's certificate against that name. ADDRESS is an IP address or a DNS name, without port.

Existing files are kept (and checked: signed by the CA, key matching, names as asked; anything else
stops the script before it changes anything); run it again with more fronts to add them. Files are
replaced by an atomic rename; keys are written with mode 0600.

Options:
  --ca-dir DIR    use the CA in DIR (ca.pem, ca-key.pem) instead of OUTDIR's; ca.pem is copied into
                  OUTDIR, ca-key.pem is not
  --days N        validity of the controller, front and client certificates (default $DAYS)
  --force         replace the existing certificates and keys named (the CA is kept)
  --new-ca        replace OUTDIR's CA too (every certificate it signed then needs replacing: implies --force)
  -h, --help      this text

Example:
  $PROG /etc/quick-migrate/tls hostmaster web1=10.0.0.11 web2=10.0.0.12 master=127.0.0.1
  $PROG /etc/quick-migrate/tls hostmaster web3=10.0.0.13   # later: adds web3 with the same CA
EOF
}

die() {
  echo "$PROG: $*" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --ca-dir) [ $# -ge 2 ] || die "--ca-dir needs a directory"; CA_DIR=$2; shift 2 ;;
    --ca-dir=*) CA_DIR=${1#--ca-dir=}; shift ;;
    --days) [ $# -ge 2 ] || die "--days needs a number"; DAYS=$2; shift 2 ;;
    --days=*) DAYS=${1#--days=}; shift ;;
    --force) FORCE=1; shift ;;
    --new-ca) NEW_CA_ASKED=1; shift ;;
    --client-only) CLIENT_ONLY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) break ;;
  esac
done

command -v openssl >/dev/null 2>&1 || die "openssl is not installed"
if [ "$NEW_CA_ASKED" = 1 ]; then
  [ -z "$CA_DIR" ] || die "--new-ca and --ca-dir exclude each other"
  [ "$CLIENT_ONLY" = 0 ] || die "--new-ca and --client-only exclude each other"
  FORCE=1
fi
[[ $DAYS =~ ^[1-9][0-9]{0,4}$ ]] || die "--days must be a positive number of days, not '$DAYS'"
if [ "$CLIENT_ONLY" = 1 ]; then
  [ $# -ge 2 ] || { usage >&2; die "--client-only needs OUTDIR and at least one CLIENT-NAME"; }
else
  [ $# -ge 2 ] || { usage >&2; die "needs OUTDIR and CONTROLLER-NAME"; }
fi

OUTDIR=$1
shift
[ -n "$OUTDIR" ] || die "OUTDIR is empty"

# ---- the names ---------------------------------------------------------------------------------

check_name() { # what name
  [[ $2 =~ $NAME_RE ]] || die "$1 '$2' is not a valid name (letters, digits, . _ -, at most 63, not starting with . _ -)"
  case "$2" in
    ca | ca-key | controller | controller-key) die "$1 '$2' is reserved (it would clash with ca.pem or controller.pem)" ;;
  esac
  [[ $2 == *-key ]] && die "$1 '$2' must not end in -key (it would clash with a key file)"
  return 0
}

# prints the subjectAltName entry for an address: IP:... or DNS:...
address_san() { # front address
  local addr=$2
  if [[ $addr =~ $IPV4_RE ]]; then
    local i
    for i in 1 2 3 4; do [ "${BASH_REMATCH[$i]}" -le 255 ] || die "front $1: '$addr' is not an IPv4 address"; done
    echo "IP:$addr"
  elif [[ $addr == \[*\] ]] || [[ $addr =~ ^[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*$ ]]; then
    addr=${addr#[}
    addr=${addr%]}
    [[ $addr =~ ^[0-9A-Fa-f:.]+$ ]] || die "front $1: '$2' is not an IPv6 address"
    echo "IP:$addr"
  elif [[ $addr == *:* ]]; then
    die "front $1: give the address without a port ('${addr%:*}', not '$addr')"
  elif [[ $addr =~ $DNS_RE ]] && [ ${#addr} -le 253 ]; then
    echo "DNS:$addr"
  else
    die "front $1: '$addr' is neither an IP address nor a DNS name"
  fi
}

CONTROLLER=""
FRONTS=()     # names
FRONT_SANS=() # subjectAltName value per front
CLIENTS=()
declare -A SEEN=()

if [ "$CLIENT_ONLY" = 1 ]; then
  for c in "$@"; do
    check_name "client name" "$c"
    [ -z "${SEEN[$c]:-}" ] || die "client $c is listed twice"
    SEEN[$c]=1
    CLIENTS+=("$c")
  done
else
  CONTROLLER=$1
  shift
  check_name "controller name" "$CONTROLLER"
  for spec in "$@"; do
    name=${spec%%=*}
    check_name "front name" "$name"
    [ -z "${SEEN[$name]:-}" ] || die "front $name is listed twice"
    SEEN[$name]=1
    san="DNS:$name"
    if [[ $spec == *=* ]]; then
      addr=${spec#*=}
      [ -n "$addr" ] || die "front $name: empty address after '='"
      extra=$(address_san "$name" "$addr")
      [ "$extra" = "DNS:$name" ] || san="$san,$extra"
    fi
    FRONTS+=("$name")
    FRONT_SANS+=("$san")
  done
fi

mkdir -p -- "$OUTDIR"
OUTDIR=$(cd -- "$OUTDIR" && pwd -P)
if [ -n "$CA_DIR" ]; then
  [ -d "$CA_DIR" ] || die "--ca-dir $CA_DIR is not a directory"
  CA_DIR=$(cd -- "$CA_DIR" && pwd -P)
fi

# ---- helpers -----------------------------------------------------------------------------------

WORK=$(mktemp -d "$OUTDIR/.make-certs.XXXXXX")
trap 'rm -rf -- "$WORK"' EXIT
MADE=()
KEPT=()

cat >"$WORK/req.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
EOF

pubkey_of_cert() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
pubkey_of_key() { openssl pkey -in "$1" -pubout 2>/dev/null; }

new_key() { # file
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null) ||
    die "openssl could not make a key"
  chmod 600 "$1"
}

serial() { echo "0x$(openssl rand -hex 16)"; }

# install FILE from the work dir into OUTDIR (atomic rename, same filesystem)
install_file() { # src dest mode
  chmod "$3" "$1"
  mv -f -- "$1" "$2"
}

# renders a subjectAltName value the way `openssl x509 -ext` prints it (IPv6 expanded), one entry a line
render_san() { # san key
  openssl req -new -x509 -config "$WORK/req.cnf" -key "$2" -subj "/CN=x" -days 1 -addext "subjectAltName = $1" 2>/dev/null |
    openssl x509 -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ' | tr ',' '\n' | sed 's/^IPAddress:/IP:/' | sort
}

# An existing pair is kept when it is whole, its key matches, the CA signed it for this purpose, and it
# has the CN and names asked; anything else stops the script before it changes anything (or --force).
check_existing() { # base cn kind(client|server) san -> 0 keep, 1 make
  local base=$1 cert="$OUTDIR/$1.pem" key="$OUTDIR/$1-key.pem"
  if [ ! -e "$cert" ] && [ ! -e "$key" ]; then return 1; fi
  if [ "$FORCE" = 1 ]; then return 1; fi
  [ "$NEW_CA" = 0 ] || die "$cert or $key exists, but there is no CA in $OUTDIR: give its folder with --ca-dir, or --new-ca to make everything anew"
  [ -e "$cert" ] || die "$key exists without $cert (remove it, or --force)"
  [ -e "$key" ] || die "$cert exists without $key (remove it, or --force)"
  [ -n "$(pubkey_of_key "$key")" ] && [ "$(pubkey_of_cert "$cert")" = "$(pubkey_of_key "$key")" ] ||
    die "$cert and $key do not belong together (--force replaces them)"
  openssl verify -CAfile "$CA_CERT" -purpose "ssl$3" "$cert" >/dev/null 2>&1 ||
    die "$cert exists but is not a valid $3 certificate signed by $CA_CERT (--force replaces it)"
  local subject
  subject=$(openssl x509 -in "$cert" -noout -subject -nameopt RFC2253 2>/dev/null)
  [ "$subject" = "subject=CN=$2" ] || die "$cert exists with ${subject#subject=}, not CN=$2 (--force replaces it)"
  local have want
  have=$(openssl x509 -in "$cert" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ' | tr ',' '\n' | sed 's/^IPAddress:/IP:/' | sort)
  want=$(render_san "$4" "$key")
  [ "$have" = "$want" ] ||
    die "$cert exists with other names ($(echo "$have" | paste -sd, -)) than asked ($(echo "$want" | paste -sd, -)) (--force replaces it)"
  return 0
}

make_cert() { # base cn kind(client|server) san
  local base=$1 cn=$2 kind=$3 san=$4
  local eku=clientAuth
  # a front's certificate is also the client certificate of its own health check (quick-migrate-agent health)
  [ "$kind" = server ] && eku="serverAuth, clientAuth"
  cat >"$WORK/$base.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $eku
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = $san
EOF
  new_key "$WORK/$base-key.pem"
  openssl req -new -config "$WORK/req.cnf" -key "$WORK/$base-key.pem" -subj "/CN=$cn" -out "$WORK/$base.csr" 2>"$WORK/err" ||
    die "openssl req failed for $cn: $(cat "$WORK/err")"
  openssl x509 -req -in "$WORK/$base.csr" -CA "$CA_CERT" -CAkey "$CA_KEY" -set_serial "$(serial)" \
    -days "$DAYS" -sha256 -extfile "$WORK/$base.ext" -out "$WORK/$base.pem" 2>"$WORK/err" ||
    die "openssl x509 failed for $cn: $(cat "$WORK/err")"
  openssl verify -CAfile "$CA_CERT" -purpose "ssl$kind" "$WORK/$base.pem" >/dev/null ||
    die "the new certificate for $cn does not verify"
  install_file "$WORK/$base-key.pem" "$OUTDIR/$base-key.pem" 600
  install_file "$WORK/$base.pem" "$OUTDIR/$base.pem" 644
  MADE+=("$base.pem, $base-key.pem  CN=$cn, $eku, $san")
}

ca_matches() { # cert key
  [ -n "$(pubkey_of_key "$2")" ] && [ "$(pubkey_of_cert "$1")" = "$(pubkey_of_key "$2")" ] &&
    openssl verify -CAfile "$1" "$1" >/dev/null 2>&1
}

# ---- plan: which CA, which files to make; every refusal happens here, before anything changes --

NEW_CA=0  # make a CA in OUTDIR
COPY_CA=0 # copy --ca-dir's ca.pem into OUTDIR
if [ -n "$CA_DIR" ]; then
  [ -f "$CA_DIR/ca.pem" ] && [ -f "$CA_DIR/ca-key.pem" ] || die "--ca-dir $CA_DIR must hold ca.pem and ca-key.pem"
  ca_matches "$CA_DIR/ca.pem" "$CA_DIR/ca-key.pem" || die "$CA_DIR/ca.pem and ca-key.pem are not a CA and its key"
  CA_CERT="$CA_DIR/ca.pem"
  CA_KEY="$CA_DIR/ca-key.pem"
  if [ "$CA_DIR" = "$OUTDIR" ]; then
    KEPT+=("ca.pem, ca-key.pem")
  elif [ -e "$OUTDIR/ca.pem" ] && cmp -s "$CA_DIR/ca.pem" "$OUTDIR/ca.pem"; then
    KEPT+=("ca.pem (the CA of $CA_DIR)")
  elif [ -e "$OUTDIR/ca.pem" ] && [ "$FORCE" != 1 ]; then
    die "$OUTDIR/ca.pem is another CA than $CA_DIR/ca.pem (--force replaces it)"
  else
    COPY_CA=1
  fi
elif [ "$NEW_CA_ASKED" != 1 ] && { [ -e "$OUTDIR/ca.pem" ] || [ -e "$OUTDIR/ca-key.pem" ]; }; then
  [ -e "$OUTDIR/ca-key.pem" ] || die "$OUTDIR/ca.pem exists without ca-key.pem: give the CA's folder with --ca-dir (or --new-ca for a new CA)"
  [ -e "$OUTDIR/ca.pem" ] || die "$OUTDIR/ca-key.pem exists without ca.pem (--new-ca makes a new CA)"
  ca_matches "$OUTDIR/ca.pem" "$OUTDIR/ca-key.pem" || die "$OUTDIR/ca.pem and ca-key.pem are not a CA and its key (--new-ca makes a new CA)"
  CA_CERT="$OUTDIR/ca.pem"
  CA_KEY="$OUTDIR/ca-key.pem"
  KEPT+=("ca.pem, ca-key.pem")
elif [ "$CLIENT_ONLY" = 1 ]; then
  die "--client-only needs an existing CA: $OUTDIR/ca.pem and ca-key.pem, or --ca-dir DIR"
else
  NEW_CA=1
  CA_CERT="$OUTDIR/ca.pem"
  CA_KEY="$OUTDIR/ca-key.pem"
fi

# each certificate: base name, CN, kind, subjectAltName
PLAN=()
if [ "$CLIENT_ONLY" = 1 ]; then
  for c in "${CLIENTS[@]}"; do PLAN+=("$c|$c|client|DNS:$c"); done
else
  PLAN+=("controller|$CONTROLLER|client|DNS:$CONTROLLER")
  for i in "${!FRONTS[@]}"; do PLAN+=("${FRONTS[$i]}|${FRONTS[$i]}|server|${FRONT_SANS[$i]}"); done
fi
TODO=()
for p in "${PLAN[@]}"; do
  IFS='|' read -r base cn kind san <<<"$p"
  if check_existing "$base" "$cn" "$kind" "$san"; then
    KEPT+=("$base.pem, $base-key.pem")
  else
    TODO+=("$p")
  fi
done

# ---- make --------------------------------------------------------------------------------------

if [ "$NEW_CA" = 1 ]; then
  cat >"$WORK/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  new_key "$WORK/ca-key.pem"
  ca_cn="quick-migrate CA ${CONTROLLER} $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  openssl req -new -x509 -config "$WORK/ca.cnf" -key "$WORK/ca-key.pem" -subj "/CN=$ca_cn" \
    -set_serial "$(serial)" -days "$CA_DAYS" -sha256 -out "$WORK/ca.pem" 2>"$WORK/err" ||
    die "openssl could not make the CA: $(cat "$WORK/err")"
  install_file "$WORK/ca-key.pem" "$OUTDIR/ca-key.pem" 600
  install_file "$WORK/ca.pem" "$OUTDIR/ca.pem" 644
  MADE+=("ca.pem, ca-key.pem  private CA '$ca_cn', $CA_DAYS days")
fi
if [ "$COPY_CA" = 1 ]; then
  cp -- "$CA_DIR/ca.pem" "$WORK/ca.pem"
  install_file "$WORK/ca.pem" "$OUTDIR/ca.pem" 644
  MADE+=("ca.pem  copied from $CA_DIR (its key stays there)")
fi
for p in ${TODO[@]+"${TODO[@]}"}; do
  IFS='|' read -r base cn kind san <<<"$p"
  make_cert "$base" "$cn" "$kind" "$san"
done

# ---- report ------------------------------------------------------------------------------------

echo "In $OUTDIR:"
for m in ${MADE[@]+"${MADE[@]}"}; do echo "  made  $m"; done
for k in ${KEPT[@]+"${KEPT[@]}"}; do echo "  kept  $k"; done
[ -e "$OUTDIR/ca-key.pem" ] && echo "ca-key.pem signs every certificate: keep it on this host only (or offline), never on a front."
for f in "$OUTDIR"/*.pem; do
  case "$f" in */ca.pem | */ca-key.pem | *-key.pem) continue ;; esac
  [ -e "$f" ] || continue
  openssl verify -CAfile "$CA_CERT" "$f" >/dev/null 2>&1 ||
    echo "warning: $f is not signed by this CA (an older one?): make it again with --force, or remove it" >&2
done

if [ "$CLIENT_ONLY" = 1 ]; then
  cat <<EOF

A client with one of these certificates may call every agent's health service. To let it run
operations, add its name to allowedClients in the agent config (reloaded without restart):
  allowedClients: [..., $(IFS=,; echo "${CLIENTS[*]}" | sed 's/,/, /g')]
EOF
  exit 0
fi

for name in ${FRONTS[@]+"${FRONTS[@]}"}; do
  cat <<EOF

# on $name: copy ca.pem, $name.pem and $name-key.pem (mode 0600) to $OUTDIR; in /etc/quick-migrate/agent.yaml
tls:
  ca: $OUTDIR/ca.pem
  cert: $OUTDIR/$name.pem
  key: $OUTDIR/$name-key.pem
allowedClients: [$CONTROLLER]
EOF
done

cat <<EOF

# on the hostmaster, in /etc/quick-migrate/controller.yaml (each front's name must be the one its certificate was made for)
tls:
  ca: $OUTDIR/ca.pem
  cert: $OUTDIR/controller.pem
  key: $OUTDIR/controller-key.pem
EOF
if [ ${#FRONTS[@]} -gt 0 ]; then
  echo "fronts:   # the hostmaster's own front, if it is one, also gets local: true"
  for i in "${!FRONTS[@]}"; do
    name=${FRONTS[$i]}
    addr=$name
    for s in ${FRONT_SANS[$i]//,/ }; do addr=${s#*:}; done
    [[ $addr == *:* ]] && addr="[$addr]"
    echo "  - { name: $name, address: \"$addr:7101\" }"
  done
fi
