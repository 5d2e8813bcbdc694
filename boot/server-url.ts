// ${server.url} is the one template variable left for the boot server to fill in (reconciler/variables.ts):
// in what it hands Mage, and in the image URLs its P2P seed reads.
export function withServerUrl<T>(value: T, url: string): T {
  if (typeof value === 'string') return value.replaceAll('${server.url}', url) as T;
  if (Array.isArray(value)) return value.map((v) => withServerUrl(v, url)) as T;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withServerUrl(v, url)])) as T;
  return value;
}
