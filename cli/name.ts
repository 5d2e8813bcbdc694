import { DragonflyError } from '../schemas/errors.js';
import { normalizeMac } from '../schemas/mac.js';
import { memorableName } from '../schemas/memorable-name.js';
import type { Io } from './output.js';

export const nameHelp = `Usage: dragonfly name MAC

Print the memorable name of a boot MAC (the low 44 bits as four BIP39 words), alone on the last line.
`;

export async function nameCommand(mac: string | undefined, io: Io): Promise<number> {
  if (!mac) throw new DragonflyError('DF_ERR_USAGE', 'missing MAC', {}, 'dragonfly name 52:54:00:ab:cd:01');
  const name = memorableName(mac);
  if (!name) throw new DragonflyError('DF_ERR_BAD_MAC', `"${mac}" is not a MAC address`);
  io.out(`${normalizeMac(mac)}\n${name}\n`);
  return 0;
}
