// Turning raw attribute text into report strings that always pass the schema's size limits.

/** Trimmed text without control characters, at most `max` code points (JSON Schema maxLength); undefined when empty. */
export function cleanText(raw: string | undefined, max: number): string | undefined {
  if (raw === undefined) return undefined;
  const text = raw.replace(/[\u0000-\u001f\u007f]/g, ' ').trim();
  if (text === '') return undefined;
  const points = Array.from(text);
  return points.length <= max ? text : points.slice(0, max).join('').trimEnd();
}

/** A decimal integer attribute ("1\n", "-1"); undefined for anything else. */
export function parseInteger(raw: string | undefined): number | undefined {
  const text = raw?.trim();
  if (!text || !/^-?\d+$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** "1" → true, "0" → false, anything else → undefined. */
export function parseFlag(raw: string | undefined): boolean | undefined {
  const text = raw?.trim();
  return text === '1' ? true : text === '0' ? false : undefined;
}

/** Drop keys whose value is undefined, so reports compare and serialise without holes. */
export function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

/** Natural order for device names: eth2 before eth10, nvme0n1 before nvme1n1. */
export function byDeviceName(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}
