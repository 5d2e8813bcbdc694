#!/bin/sh
# busybox udhcpc hook inside Mage's initramfs (installed as /etc/mage/udhcpc.sh by `dragonfly mage build`):
# set the leased address, the default route and /etc/resolv.conf. A renewal of the same address changes
# nothing, so an image download in progress is never cut.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface" 2>/dev/null
    ip link set "$interface" up
    ;;
  bound|renew)
    if ! ip -4 addr show dev "$interface" | grep -q " $ip/${mask:-24} "; then
      ip -4 addr flush dev "$interface" 2>/dev/null
      ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    fi
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu" 2>/dev/null
    if [ -n "$router" ]; then
      ip route show default dev "$interface" 2>/dev/null | grep -q . || for r in $router; do
        ip route add default via "$r" dev "$interface" 2>/dev/null && break
      done
    fi
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "$ip/${mask:-24}${router:+ via ${router%% *}}" > "/run/mage/lease.$interface"
    ;;
esac
exit 0
