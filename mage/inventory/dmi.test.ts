import { expect, test } from 'vitest';
import { parseDmi } from './dmi.js';

test('vendor, product, serial and UUID, trimmed and the UUID lower-cased', () => {
  expect(
    parseDmi({
      sys_vendor: 'Dell Inc.\n',
      product_name: 'PowerEdge R640\n',
      product_serial: '7X2K9T2\n',
      product_uuid: '4C4C4544-0058-3210-804B-B7C04F395432\n',
    }),
  ).toEqual({ vendor: 'Dell Inc.', product: 'PowerEdge R640', serial: '7X2K9T2', uuid: '4c4c4544-0058-3210-804b-b7c04f395432' });
});

test('unprogrammed SMBIOS placeholders are dropped, real values kept', () => {
  expect(
    parseDmi({
      sys_vendor: 'To Be Filled By O.E.M.\n',
      product_name: 'Default string\n',
      product_serial: '0123456789\n',
      product_uuid: '03000200-0400-0500-0006-000700080009\n',
    }),
  ).toBeUndefined();
  expect(parseDmi({ sys_vendor: 'QEMU\n', product_name: 'Standard PC (Q35 + ICH9, 2009)\n', product_uuid: '00000000-0000-0000-0000-000000000000' })).toEqual({
    vendor: 'QEMU',
    product: 'Standard PC (Q35 + ICH9, 2009)',
  });
});

test('no DMI at all (a microVM, or files unreadable without root) gives undefined', () => {
  expect(parseDmi({})).toBeUndefined();
});

test('control characters are removed and long values clipped to the schema limits', () => {
  const dmi = parseDmi({ sys_vendor: 'Acme\u0001Corp', product_name: 'p'.repeat(300), product_uuid: 'u'.repeat(100) });
  expect(dmi?.vendor).toBe('Acme Corp');
  expect(dmi?.product).toHaveLength(256);
  expect(dmi?.uuid).toHaveLength(64);
});
