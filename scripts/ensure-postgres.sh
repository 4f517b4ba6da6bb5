#!/usr/bin/env bash
# Makes sure PostgreSQL answers at 127.0.0.1:5432 (trust auth for local tests): starts the
# installed cluster when it is down, installs Debian's postgresql when it is absent.
set -euo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if command -v pg_isready >/dev/null 2>&1 && ready; then exit 0; fi
if [ ! -d /etc/postgresql ] || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "PostgreSQL is not installed (need root to install)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  ver=$(ls /etc/postgresql | head -n1)
  conf=/etc/postgresql/$ver/main
  sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "$conf/postgresql.conf"
  cat > "$conf/pg_hba.conf" <<'HBA'
local all all trust
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
HBA
fi
ver=$(ls /etc/postgresql | head -n1)
pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
for _ in $(seq 1 60); do ready && exit 0; sleep 0.5; done
echo "PostgreSQL did not come up at 127.0.0.1:5432" >&2
exit 1
