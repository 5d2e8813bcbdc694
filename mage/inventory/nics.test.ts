import { describe, expect, test } from 'vitest';
import { parseNic } from './nics.js';

const pci = { deviceLink: '../../../0000:65:00.0', driverLink: '../../../../bus/pci/drivers/ixgbe' };

describe('parseNic', () => {
  test('a cabled 10 GbE port', () => {
    expect(parseNic({ name: 'enp101s0f0', address: 'a0:36:9f:8a:3c:10\n', carrier: '1\n', operstate: 'up\n', speed: '10000\n', ...pci })).toEqual({
      name: 'enp101s0f0',
      mac: 'a0:36:9f:8a:3c:10',
      link: true,
      speedMbps: 10000,
      driver: 'ixgbe',
    });
  });

  test('no cable: carrier 0, speed -1 (unknown) is left out', () => {
    expect(parseNic({ name: 'eth1', address: 'A0:36:9F:8A:3C:12', carrier: '0', operstate: 'down', speed: '-1', ...pci })).toEqual({
      name: 'eth1',
      mac: 'a0:36:9f:8a:3c:12',
      link: false,
      driver: 'ixgbe',
    });
  });

  test('administratively down: carrier and speed unreadable, operstate decides', () => {
    expect(parseNic({ name: 'enp4s0', address: '00:1b:21:c4:55:66', operstate: 'down', ...pci })).toMatchObject({ link: false });
    expect(parseNic({ name: 'enp4s0', address: '00:1b:21:c4:55:66', operstate: 'up', ...pci })).toMatchObject({ link: true });
    expect(parseNic({ name: 'enp4s0', address: '00:1b:21:c4:55:66', operstate: 'unknown', ...pci })).not.toHaveProperty('link');
  });

  test('the unsigned form of -1 is not a speed', () => {
    expect(parseNic({ name: 'eth0', address: '00:1b:21:c4:55:66', carrier: '1', speed: '4294967295', ...pci })).not.toHaveProperty('speedMbps');
  });

  test('virtual interfaces (no device link) and lo are skipped unless asked for; lo always', () => {
    const bridge = { name: 'virbr0', address: '52:54:00:6a:1b:2c', operstate: 'down' };
    expect(parseNic(bridge)).toBeUndefined();
    expect(parseNic(bridge, true)).toEqual({ name: 'virbr0', mac: '52:54:00:6a:1b:2c', link: false });
    expect(parseNic({ name: 'lo', address: '00:00:00:00:00:00' }, true)).toBeUndefined();
  });

  test('an address that is not an Ethernet MAC (InfiniBand, unreadable) is skipped: the report requires a MAC', () => {
    expect(parseNic({ name: 'ib0', address: '80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:a1:b2:c3', ...pci })).toBeUndefined();
    expect(parseNic({ name: 'eth9', ...pci })).toBeUndefined();
  });

  test('a device without a bound driver has no driver field', () => {
    expect(parseNic({ name: 'eth0', address: '00:1b:21:c4:55:66', deviceLink: '../../../0000:01:00.0' })).toEqual({ name: 'eth0', mac: '00:1b:21:c4:55:66' });
  });
});
