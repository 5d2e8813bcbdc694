// Reading a large fleet on one thread while parsing it on another: a cold `plan` of 10,000 files spent a
// sixth of its time in readFileSync before the first document was parsed. Small fleets are read in
// place (starting a thread costs more than it saves).
import { Worker } from 'node:worker_threads';
import { fileReadError, listFleetDir, readFleetFile, type FleetFileEntry } from '../reconciler/sources/fleet-dir.js';
import type { SourceFile } from '../reconciler/parse.js';

/** Below this many files the fleet is read on the main thread. */
const THREAD_FROM_FILES = 1000;

type WorkerMessage = { files: SourceFile[]; done?: boolean } | { failed: { path: string; why: string } };

/**
 * The reading thread, as source (no module file to find, whether running from dist/ or from the sources in
 * tests): read the entries in order, post them in batches, stop at the first file that cannot be read.
 */
const READER = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
let batch = [];
for (const e of workerData.entries) {
  let text;
  try { text = fs.readFileSync(e.abs, 'utf8'); } catch (err) { parentPort.postMessage({ failed: { path: e.path, why: err.code || String(err) } }); process.exit(0); }
  batch.push({ path: e.path, text });
  if (batch.length === 256) { parentPort.postMessage({ files: batch }); batch = []; }
}
parentPort.postMessage({ files: batch, done: true });
`;

/**
 * Every fleet file under `root`, sorted by path (as readFleetDir), handing each batch to `onFiles` as soon as
 * it is read (with the number of files in all), on the main thread: parse there while the rest is still read.
 */
export function readFleetConcurrently(root: string, onFiles: (files: SourceFile[], total: number) => void): Promise<SourceFile[]> {
  return readEntriesConcurrently(listFleetDir(root), onFiles);
}

/** The files of `entries` (listFleetDir's), in their order; read on another thread when there are many. */
export async function readEntriesConcurrently(entries: FleetFileEntry[], onFiles: (files: SourceFile[], total: number) => void): Promise<SourceFile[]> {
  if (entries.length < THREAD_FROM_FILES) {
    const files = entries.map(readFleetFile);
    onFiles(files, files.length);
    return files;
  }
  const worker = new Worker(READER, { eval: true, workerData: { entries } });
  const out: SourceFile[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (m: WorkerMessage) => {
        if ('failed' in m) return reject(fileReadError(m.failed.path, m.failed.why));
        out.push(...m.files);
        try {
          onFiles(m.files, entries.length);
        } catch (e) {
          return reject(e);
        }
        if (m.done) resolve();
      });
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the fleet reader thread exited (${code}) before it finished`)));
    });
  } finally {
    void worker.terminate();
  }
  return out;
}
