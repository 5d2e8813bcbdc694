// What an ELF program needs to run: its interpreter (PT_INTERP) and the shared libraries it names
// (DT_NEEDED), read from the file itself, so that libraries come from the Debian packages the build
// extracted and never from what the build host happens to have (ldd would ask the host's loader).
// ELF-64 little-endian only: the architectures Debian ships Mage for (amd64, arm64).

export interface ElfNeeds {
  /** PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2; undefined for a static program or a library. */
  interp?: string;
  /** DT_NEEDED sonames, in file order. */
  needed: string[];
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NEEDED = 1n;
const DT_STRTAB = 5n;

export function isElf(data: Uint8Array): boolean {
  return data.length >= 64 && data[0] === 0x7f && data[1] === 0x45 && data[2] === 0x4c && data[3] === 0x46;
}

/** The interpreter and DT_NEEDED of an ELF file; undefined when `data` is not ELF (a script, a text file). */
export function elfNeeds(data: Buffer): ElfNeeds | undefined {
  if (!isElf(data)) return undefined;
  // e_ident[EI_CLASS] = 2 (ELFCLASS64), e_ident[EI_DATA] = 1 (ELFDATA2LSB)
  if (data[4] !== 2 || data[5] !== 1) throw new RangeError('only 64-bit little-endian ELF files are supported');
  const phoff = Number(data.readBigUInt64LE(0x20));
  const phentsize = data.readUInt16LE(0x36);
  const phnum = data.readUInt16LE(0x38);
  const loads: { vaddr: bigint; offset: bigint; filesz: bigint }[] = [];
  let dynamic: { offset: number; size: number } | undefined;
  let interp: string | undefined;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > data.length) throw new RangeError('truncated program header table');
    const type = data.readUInt32LE(ph);
    const offset = data.readBigUInt64LE(ph + 8);
    const vaddr = data.readBigUInt64LE(ph + 16);
    const filesz = data.readBigUInt64LE(ph + 32);
    if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
    else if (type === PT_DYNAMIC) dynamic = { offset: Number(offset), size: Number(filesz) };
    else if (type === PT_INTERP) interp = cString(data, Number(offset));
  }
  if (!dynamic) return { ...(interp ? { interp } : {}), needed: [] };
  const neededOffsets: bigint[] = [];
  let strtab: bigint | undefined;
  for (let at = dynamic.offset; at + 16 <= dynamic.offset + dynamic.size && at + 16 <= data.length; at += 16) {
    const tag = data.readBigInt64LE(at);
    const val = data.readBigUInt64LE(at + 8);
    if (tag === 0n) break; // DT_NULL
    if (tag === DT_NEEDED) neededOffsets.push(val);
    else if (tag === DT_STRTAB) strtab = val;
  }
  if (neededOffsets.length === 0) return { ...(interp ? { interp } : {}), needed: [] };
  if (strtab === undefined) throw new RangeError('DT_NEEDED without DT_STRTAB');
  // DT_STRTAB is an address: the PT_LOAD segment that maps it gives its place in the file.
  const seg = loads.find((l) => strtab! >= l.vaddr && strtab! < l.vaddr + l.filesz);
  if (!seg) throw new RangeError('DT_STRTAB is outside every loaded segment');
  const base = Number(strtab - seg.vaddr + seg.offset);
  return { ...(interp ? { interp } : {}), needed: neededOffsets.map((o) => cString(data, base + Number(o))) };
}

function cString(data: Buffer, at: number): string {
  const end = data.indexOf(0, at);
  if (at >= data.length || end < 0) throw new RangeError('string outside the file');
  return data.toString('latin1', at, end);
}
