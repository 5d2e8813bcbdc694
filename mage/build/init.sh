#!/bin/sh
# /init of Mage's initramfs (busybox ash, PID 1), installed by `dragonfly mage build`.
# Mounts the kernel filesystems, loads the bundled NIC and disk drivers, brings up every NIC with a link
# and asks DHCP on each (the boot NIC first) until one reaches the Dragonfly server, then runs the agent
# (node /usr/lib/mage/mage.mjs, which reads dragonfly.url/.mac/.workflow/.token from /proc/cmdline).
# PID 1 stays this shell: if the agent exits it is restarted (or, with dragonfly.debug, a shell opens).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=linux
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts /dev/shm /run/mage /tmp /var/tmp /mnt
mount -t devpts devpts /dev/pts 2>/dev/null
ln -sf /proc/self/fd /dev/fd 2>/dev/null

# Messages go to the screen and to the serial port, whichever console= the kernel was given.
CONSOLES=""
for c in /dev/tty0 /dev/ttyS0; do
  [ -c "$c" ] && (printf '' > "$c") 2>/dev/null && CONSOLES="$CONSOLES $c"
done
[ -n "$CONSOLES" ] || CONSOLES=/dev/console
say() {
  line="MAGE[$(cut -d' ' -f1 /proc/uptime)]: $*"
  for c in $CONSOLES; do echo "$line" > "$c" 2>/dev/null; done
  echo "$line" >> /run/mage/init.log
}

URL="" MAC="" DEBUG=""
for word in $(cat /proc/cmdline); do
  case "$word" in
    dragonfly.url=*) URL="${word#dragonfly.url=}" ;;
    dragonfly.mac=*) MAC="$(echo "${word#dragonfly.mac=}" | tr 'A-F-' 'a-f:')" ;;
    dragonfly.debug|dragonfly.debug=1|dragonfly.debug=true|dragonfly.debug=yes|dragonfly.debug=on) DEBUG=1 ;;
  esac
done
say "init start: kernel $(uname -r), $(cat /etc/mage/release 2>/dev/null)"

debug_shell() {
  if [ -n "$DEBUG" ]; then
    say "dragonfly.debug: $1; opening a shell (log: /run/mage/init.log; exit the shell to carry on)"
    setsid cttyhack sh
    return 0
  fi
  return 1
}

# Drivers, in dependency order (the list is written at build time; built-in ones are not in it).
loaded=0 failed=""
while read -r ko; do
  [ -n "$ko" ] || continue
  if insmod "$ko" 2>/dev/null; then loaded=$((loaded + 1)); else failed="$failed ${ko##*/}"; fi
done < /etc/mage/modules
say "loaded $loaded kernel modules${failed:+ (did not load:$failed)}"

# NICs: physical interfaces only (a device link), as they appear.
nics() {
  for n in /sys/class/net/*; do
    n=${n##*/}
    [ "$n" != lo ] && [ -e "/sys/class/net/$n/device" ] && echo "$n"
  done
}
carrier() { [ "$(cat "/sys/class/net/$1/carrier" 2>/dev/null)" = 1 ]; }
addr_of() { ip -4 -o addr show dev "$1" 2>/dev/null | awk '{print $4; exit}'; }

ip link set lo up
i=0
while [ -z "$(nics)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5 # let the other NICs of a multi-NIC machine register too
for n in $(nics); do ip link set "$n" up 2>/dev/null; done

# The boot NIC (dragonfly.mac) first, then every NIC with a link; only if none has a link, all of them.
candidates() {
  withlink="" boot=""
  for n in $(nics); do
    if [ -n "$MAC" ] && [ "$(cat "/sys/class/net/$n/address")" = "$MAC" ]; then boot=$n
    elif carrier "$n"; then withlink="$withlink $n"
    fi
  done
  if [ -z "$boot$withlink" ]; then nics; else echo $boot $withlink; fi
}
describe() {
  for n in $(nics); do
    a=$(addr_of "$n")
    if carrier "$n"; then l=link; else l=no-link; fi
    printf '%s ' "$n($(cat "/sys/class/net/$n/address"),$l${a:+,$a})"
  done
}

# Any HTTP answer means the server is there (an older server without /healthz answers 404).
# (busybox 1.35's wget -T crashes: the time limit comes from timeout.)
WHY=""
reachable() {
  out=$(timeout 8 wget -O /dev/null "$URL/healthz" 2>&1) && return 0
  case "$out" in *"server returned error"*) return 0 ;; esac
  WHY=$(echo "$out" | grep -v '^Connecting to' | tail -n 1 | sed 's/^wget: //')
  return 1
}

# wait up to 5 s for a link (autonegotiation on real NICs takes a few seconds)
for w in $(seq 1 50); do
  for n in $(nics); do carrier "$n" && break 2; done
  sleep 0.1
done
say "NICs: $(describe)"

[ -n "$URL" ] || say "no dragonfly.url= on the kernel command line: Mage does not know its server"

GOOD="" round=0
while [ -z "$GOOD" ]; do
  round=$((round + 1))
  summary="" leased=""
  for n in $(candidates); do
    udhcpc -i "$n" -s /etc/mage/udhcpc.sh -p "/run/mage/udhcpc.$n.pid" -n -t 4 -T 2 -x hostname:mage > "/run/mage/udhcpc.$n.log" 2>&1
    a=$(addr_of "$n")
    if [ -z "$a" ]; then summary="$summary $n:no-DHCP-answer"; continue; fi
    if [ -z "$URL" ] || reachable; then
      GOOD=$n; say "DHCP on $n: $(cat "/run/mage/lease.$n" 2>/dev/null || echo "$a")${URL:+; $URL answers}"
      break
    fi
    summary="$summary $n:$a(${WHY:-no answer})"
    [ -n "$leased" ] || leased=$n
    # keep looking on the other NICs: release this one so that its route does not hide theirs
    kill "$(cat "/run/mage/udhcpc.$n.pid" 2>/dev/null)" 2>/dev/null
    ip -4 addr flush dev "$n" 2>/dev/null
  done
  [ -n "$GOOD" ] && break
  say "cannot reach the Dragonfly server ${URL:-(no dragonfly.url=)} (try $round):$summary"
  say "NICs: $(describe)"
  debug_shell "no NIC reaches the server" && continue
  if [ $round -ge 3 ] && [ -n "$leased" ]; then
    udhcpc -i "$leased" -s /etc/mage/udhcpc.sh -p "/run/mage/udhcpc.$leased.pid" -n -t 4 -T 2 -x hostname:mage > "/run/mage/udhcpc.$leased.log" 2>&1
    GOOD=$leased
    say "starting Mage on $leased ($(addr_of "$leased")) anyway: it keeps retrying $URL with backoff"
    break
  fi
  say "retrying DHCP in 5 s"
  sleep 5
done

# Without dragonfly.mac= (a hand-made boot entry), the NIC that reached the server is the boot NIC.
BOOTMAC=${MAC:-$(cat "/sys/class/net/$GOOD/address" 2>/dev/null)}
# --fast-track: from discovery, go on with a new workflow in this boot when its script boots this same Mage.
ARGS="--fast-track"
[ -n "$MAC" ] || [ -z "$BOOTMAC" ] || ARGS="$ARGS --mac $BOOTMAC"
while :; do
  say "starting Mage: server ${URL:-?}, boot MAC ${BOOTMAC:-?}, via $GOOD $(addr_of "$GOOD")"
  { node /usr/lib/mage/mage.mjs $ARGS; echo $? > /run/mage/agent.rc; } 2>&1 | tee -a $CONSOLES /run/mage/agent.log > /dev/null
  rc=$(cat /run/mage/agent.rc 2>/dev/null)
  say "Mage exited with status ${rc:-?} (server ${URL:-?}; NICs: $(describe))"
  debug_shell "the agent stopped" && continue
  say "restarting Mage in 10 s (boot with dragonfly.debug for a shell)"
  sleep 10
done
