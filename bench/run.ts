// `npm run bench`: every benchmark, one after the other. Each prints its own figures and a JSON line.
import { benchPlan } from './plan.js';

await benchPlan();
process.exit(0);
