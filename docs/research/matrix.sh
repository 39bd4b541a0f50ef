#!/bin/bash
# Runs every attack against the recommended config; prints one line per attack.
cd /tmp/h2research
REC='"settings":{"maxConcurrentStreams":100,"maxHeaderListSize":131072},"maxHeaderListPairs":260,"maxSessionInvalidFrames":5000,"berth":{"maxHeaderBytes":65536,"maxHeaderFields":128,"maxResetsPerSec":100,"maxPingsPerSec":100,"maxSettingsPerSec":20,"settingsAckTimeoutMs":3000,"maxTotalStreams":1000,"maxHiddenRejectsPerSec":100}'
[ -n "$TLS" ] && REC="\"tls\":true,$REC"
while read -r atk; do
  [ -z "$atk" ] && continue
  out=$(./run.sh "{$REC}" $atk)
  r=$(echo "$out" | grep -E "^\{'go" | python3 -c "import sys,ast; d=ast.literal_eval(sys.stdin.read()); print('goaway=%s closed=%s rst=%s alive=%s' % (d['goaways'], d['closed'], d['rst'], d['alive_after']))")
  k=$(echo "$out" | grep -oE '"why":"[^"]*"|"code":"ERR_HTTP2[A-Z_]*","msg":"[^"]*"' | head -1)
  printf '%-34s %s  %s\n' "$atk" "$r" "$k"
done <<'LIST'
concurrent 200 --waitsettings
concurrent 5000
concurrent 300 --noack wait=5
many_fields 130
many_fields 300
many_fields_repeat 3000 wait=3
big_header 70000
big_header_repeat 300 --noack
rapid_reset 5000
rapid_reset_slow 200
continuation 100000
continuation_exact 9
settings 300000
settings_entries 33
ping 300000
ping_paced 500
myr_trailer_noes 3000
myr_trailer_noes 900 pace=300
myr_bad_header 3000 wait=3
myr_cl 10
wu_conn_ovf 1
sequential 1200 wait=1
LIST
