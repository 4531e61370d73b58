#!/usr/bin/env bash
# Runs the whole test suite: installs the test peers (the official Sinch SDKs from npm and
# PyPI) when they are missing, then `cargo test` over the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# nginx plays the mobile operator's header-enrichment proxy in the seamless tests.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# SIP peers (SIPp as carrier/handset, baresip as an answering handset), digit prompts and
# espeak-ng for the voice tests.
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip-core)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
[ -f /usr/share/asterisk/sounds/en_US_f_Allison/digits/0.wav ] || need_apt+=(asterisk-core-sounds-en-wav)
# Kamailio plays the carrier's SBC (outbound proxy with digest auth) in the SIP tests.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need_apt+=(kamailio)
# ... and, with its TLS module, the trunk reached over SIP over TLS.
compgen -G '/usr/lib/*/kamailio/modules/tls.so' >/dev/null \
  || [ -f /usr/lib/kamailio/modules/tls.so ] || need_apt+=(kamailio-tls-modules)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
  # The package starts a system nginx on port 80; the tests run their own.
  pkill -x nginx 2>/dev/null || true
  pkill -x kamailio 2>/dev/null || true
fi
export PATH="$PATH:/usr/sbin"

# PostgreSQL on 127.0.0.1:5432 with trust auth (the store conformance suite and the
# multi-node tests use it); install and start it where the machine does not run one.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    ver=$(ls /etc/postgresql | head -n1)
    sed -i 's/^\(local\|host\)\(.*\)\(peer\|scram-sha-256\|md5\)$/\1\2trust/' /etc/postgresql/$ver/main/pg_hba.conf
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

# npm @sinch/verification@1.4.0 + @sinch/sdk-core@1.4.0 (pinned by e2e/node/package-lock.json).
if [ ! -d e2e/node/node_modules/@sinch/verification ]; then
  npm ci --prefix e2e/node --no-audit --no-fund --loglevel=error
fi
# Prism (a contract mock of the WhatsApp Cloud API from its OpenAPI document); its
# telemetry install script is skipped.
if [ ! -x e2e/prism/node_modules/.bin/prism ]; then
  npm ci --prefix e2e/prism --ignore-scripts --no-audit --no-fund --loglevel=error
fi
# The SMSC test peer (node smpp 0.5.1).
if [ -f e2e/smsc/package-lock.json ] && [ ! -d e2e/smsc/node_modules/smpp ]; then
  npm ci --prefix e2e/smsc --no-audit --no-fund --loglevel=error
fi
# The mobile operator of the CAMARA seamless tests (oidc-provider 9.13.3 as its
# authorization server; e2e/oidc/operator.mjs). The CAMARA spec it is checked against is
# ../shared/specs/camara-number-verification.yaml, beside the clone.
if [ ! -d e2e/oidc/node_modules/oidc-provider ]; then
  npm ci --prefix e2e/oidc --no-audit --no-fund --loglevel=error
fi
# openssl generates the CAMARA tests' client keys.
command -v openssl >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl; }
# PyPI sinch==1.1.4, the last Python release with the Verification API.
if ! e2e/python/.venv/bin/python -c "import sinch" >/dev/null 2>&1; then
  python3 -m venv e2e/python/.venv
  e2e/python/.venv/bin/pip install -q -r e2e/python/requirements.txt
fi

cargo test --workspace --locked "$@"
