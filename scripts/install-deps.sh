#!/usr/bin/env bash
# Installs the Debian packages the tests need. Idempotent: installs only what is missing.
set -euo pipefail
# git: fleet repos; atftp, tftp-hpa, curl: real TFTP clients; tftpd-hpa: the TFTP baseline of bench/boot;
# ipxe, ipxe-qemu, qemu-system-x86: real PXE firmware under QEMU; iproute2: network namespaces;
# fdisk, dosfstools, e2fsprogs, util-linux, mtools, kexec-tools, zstd, xz-utils, bzip2: Mage actions;
# xfsprogs, btrfs-progs: writefile into filesystems that are mounted (not ext4/vfat);
# ovmf: UEFI firmware for the UEFI PXE / HTTP boot tests; python3: IPv6 router adverts in netns tests;
# kmod (depmod, modprobe -D), binutils (strip): `dragonfly mage build`, which copies the Mage actions' tools
# above into the initramfs; cpio: the tests read the built initramfs back;
# nasm: assembles the marker MBR of test/lifecycle.test.ts's installed-OS image.
pkgs=(git curl atftp tftp-hpa tftpd-hpa ipxe ipxe-qemu qemu-system-x86 iproute2 fdisk dosfstools e2fsprogs util-linux mtools kexec-tools zstd xz-utils bzip2 xfsprogs btrfs-progs ovmf python3 kmod binutils cpio nasm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "install-deps: need root for apt-get (missing: ${missing[*]})" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all Debian packages present"
fi
