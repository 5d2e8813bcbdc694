// `npm run bench`: every benchmark, one after the other. Each prints its own figures and a JSON line.
import { benchBoot } from './boot.js';
import { benchPlan } from './plan.js';

await benchPlan();
await benchBoot();
process.exit(0);
