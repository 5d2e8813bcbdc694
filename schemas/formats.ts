// Custom JSON Schema formats. Each format maps to one DF_ERR_ code, so a failing value gets a precise
// error and hint instead of a regular expression dump.
import type { ErrorCode } from './errors.js';
import { isMac } from './mac.js';

const SIZE = /^\d+(?:\.\d+)?\s?(?:B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$/;
const DURATION = /^(?=\d)(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;
const DNS_LABEL = /^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const LABEL_NAME = /^[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const MEMORABLE = /^(?:[A-Z][a-z]+){4}\d*$/;
const DNS_SUBDOMAIN = /^[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$/;

function isHttpUrl(text: string): boolean {
  // Images served by the Dragonfly server itself: the boot server fills in ${server.url}.
  if (text.startsWith('${server.url}/')) text = 'http://server.invalid' + text.slice('${server.url}'.length);
  try {
    const u = new URL(text);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '' && !/\s/.test(text);
  } catch {
    return false;
  }
}

function isSafeAbsolutePath(text: string): boolean {
  return text.startsWith('/') && !text.includes('\0') && !text.split('/').includes('..');
}

function isLabelKey(text: string): boolean {
  const slash = text.indexOf('/');
  if (slash === -1) return LABEL_NAME.test(text);
  return DNS_SUBDOMAIN.test(text.slice(0, slash)) && LABEL_NAME.test(text.slice(slash + 1));
}

export const FORMATS: Record<string, { validate: (text: string) => boolean; code: ErrorCode; what: string }> = {
  mac: { validate: isMac, code: 'DF_ERR_MAC', what: 'a MAC address' },
  size: { validate: (t) => SIZE.test(t), code: 'DF_ERR_SIZE', what: 'a size' },
  'partition-size': { validate: (t) => t === 'rest' || SIZE.test(t), code: 'DF_ERR_SIZE', what: "a size or 'rest'" },
  duration: { validate: (t) => DURATION.test(t), code: 'DF_ERR_DURATION', what: 'a duration' },
  sha256: { validate: (t) => /^[0-9a-fA-F]{64}$/.test(t), code: 'DF_ERR_SHA256', what: 'a sha256 digest' },
  'http-url': { validate: isHttpUrl, code: 'DF_ERR_URL', what: 'an http(s) URL' },
  'dns-label': { validate: (t) => DNS_LABEL.test(t), code: 'DF_ERR_NAME', what: 'a DNS label' },
  'resource-name': {
    validate: (t) => t.length <= 253 && t.split('.').every((label) => DNS_LABEL.test(label)),
    code: 'DF_ERR_NAME',
    what: 'a name of DNS labels joined by "."',
  },
  'machine-name': {
    validate: (t) => DNS_LABEL.test(t) || MEMORABLE.test(t),
    code: 'DF_ERR_NAME',
    what: 'a machine name (DNS label or memorable name)',
  },
  'absolute-path': { validate: isSafeAbsolutePath, code: 'DF_ERR_PATH', what: 'an absolute path' },
  'device-path': {
    validate: (t) => /^\/dev\/[A-Za-z0-9/_.:-]+$/.test(t) && isSafeAbsolutePath(t),
    code: 'DF_ERR_PATH',
    what: 'a device path under /dev',
  },
  'label-key': { validate: isLabelKey, code: 'DF_ERR_LABEL', what: 'a label key' },
  'file-mode': { validate: (t) => /^0?[0-7]{3,4}$/.test(t), code: 'DF_ERR_FILE_MODE', what: 'an octal file mode' },
};

const UNIT: Record<string, number> = {
  B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12,
  KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40,
};

/** Bytes of a size string that passed the `size` format. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s?([A-Za-z]*)$/.exec(text);
  if (!m) throw new RangeError(`not a size: ${text}`);
  return Math.round(Number(m[1]) * (UNIT[m[2] || 'B'] ?? NaN));
}

/** Seconds of a duration string that passed the `duration` format. */
export function parseDuration(text: string): number {
  const m = DURATION.exec(text);
  if (!m) throw new RangeError(`not a duration: ${text}`);
  return Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
}
