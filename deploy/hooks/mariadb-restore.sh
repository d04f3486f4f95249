#!/bin/sh
# dbRestore hook without drush: puts one site's database back as the dump of mariadb-dump.sh left it.
# Usage: mariadb-restore.sh OPTION-FILE DUMP   (the same option file as mariadb-dump.sh)
# Tables and views the dump does not know (made by updatedb after it) are dropped first, in the same
# session that loads the dump: the database ends as it was, not as a union of before and after.
# A missing, empty or incomplete dump is refused before anything is dropped.
set -eu
PROG=mariadb-restore.sh
die() { echo "$PROG: $*" >&2; exit 1; }

[ "$#" -eq 2 ] || die "usage: $PROG OPTION-FILE DUMP"
cnf=$1
dump=$2
[ -f "$cnf" ] && [ -r "$cnf" ] || die "cannot read the option file $cnf"
db=$(sed -n '/^[[:space:]]*\[quick-migrate\]/,/^[[:space:]]*\[/s/^[[:space:]]*database[[:space:]]*=[[:space:]]*\([^[:space:]]*\)[[:space:]]*$/\1/p' "$cnf" | head -n 1)
[ -n "$db" ] || die "$cnf: no database= under [quick-migrate]"
[ -f "$dump" ] && [ -s "$dump" ] || die "no dump to restore: $dump is missing or empty"
tail -n 1 -- "$dump" | grep -q '^-- Dump completed' || die "$dump is incomplete (no completion trailer): not restored"

drops=$(mariadb --defaults-extra-file="$cnf" --batch --skip-column-names --raw -e "
  SELECT CONCAT('DROP ', IF(table_type = 'VIEW', 'VIEW', 'TABLE'), ' IF EXISTS \`', REPLACE(table_name, '\`', '\`\`'), '\`;')
  FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_type = 'VIEW' DESC" -- "$db") ||
  die "cannot list the tables of $db"
{
  echo "SET FOREIGN_KEY_CHECKS = 0;"
  printf '%s\n' "$drops"
  cat -- "$dump"
} | mariadb --defaults-extra-file="$cnf" --batch -- "$db" || die "loading $dump into $db failed"
echo "$PROG: restored $db from $dump"
