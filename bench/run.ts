// `npm run bench`: every benchmark, one after the other. Each prints its own figures and a JSON line.
import { benchBoot } from './boot.js';
import { benchPlan } from './plan.js';
import { benchTftp } from './tftp.js';

await benchPlan();
await benchBoot();
await benchTftp();
process.exit(0);
