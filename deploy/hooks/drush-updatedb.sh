#!/bin/sh
# updatedb hook through drush: database updates, then the cache clear of the site's Drupal version
# (Drupal 7: cc all; Drupal 8+: cr).
# Usage: drush-updatedb.sh @ALIAS 7|8
set -eu
PROG=drush-updatedb.sh
die() { echo "$PROG: $*" >&2; exit 1; }

[ "$#" -eq 2 ] || die "usage: $PROG @ALIAS 7|8"
alias=$1
case $2 in
  7) clear="cc all" ;;
  8) clear="cr" ;;
  *) die "Drupal version must be 7 or 8 (8 for 8 and later), not $2" ;;
esac
${DRUSH:-drush} "$alias" updatedb -y || die "drush $alias updatedb failed"
# $clear is split on purpose: "cc all" is two arguments
# shellcheck disable=SC2086
${DRUSH:-drush} "$alias" $clear || die "drush $alias $clear failed"
