// `npm run bench`: every benchmark, one after the other. Each prints its own figures and a JSON line.
import { benchBoot } from './boot.js';
import { benchPlan } from './plan.js';
import { benchReconcile } from './reconcile.js';
import { benchTftp } from './tftp.js';
import { benchDecompress } from './decompress.js';
import { benchImage2Disk } from './image2disk.js';
import { benchLifecycle } from './lifecycle.js';
import { benchStoreGrowth } from './store-growth.js';
import { benchP2p } from './p2p.js';

await benchPlan();
await benchBoot();
await benchTftp();
await benchImage2Disk();
await benchDecompress();
await benchReconcile();
await benchStoreGrowth();
await benchLifecycle();
await benchP2p();
process.exit(0);
