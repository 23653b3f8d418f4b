// BullMQ delayed jobs, Worker concurrency 50 — run by bench/timers.py.
// Usage: node bullmq_timers.mjs REDIS_URL N SPREAD_S LEAD_S CAP_S OUT.json → writes {"lateness_ms": [...], ...}
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";
import { writeFileSync } from "node:fs";

const [url, nArg, spreadArg, leadArg, capArg, outPath] = process.argv.slice(2);
const n = Number(nArg), spread = Number(spreadArg) * 1000, lead = Number(leadArg) * 1000, cap = Number(capArg) * 1000;
const connection = new IORedis(url, { maxRetriesPerRequest: null });
await connection.flushdb();
const queue = new Queue("timers", { connection });
const lateness = [];
// The worker runs while the jobs are added, as in production (not only once all are in).
const worker = new Worker("timers", async (job) => { lateness.push(Date.now() - job.data.due); },
  { connection: new IORedis(url, { maxRetriesPerRequest: null }), concurrency: 50 });
const t0 = Date.now() + lead;
const batch = 1000;
for (let start = 0; start < n; start += batch) {
  const now = Date.now();
  const jobs = [];
  for (let i = start; i < Math.min(n, start + batch); i++) {
    const due = t0 + (spread * i) / n;
    jobs.push({ name: "fire", data: { due }, opts: { delay: Math.max(0, due - now), removeOnComplete: true } });
  }
  await queue.addBulk(jobs);
}
const enqueuedAt = Date.now();
const deadline = t0 + spread + cap;
while (lateness.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
const last = Date.now();
await worker.close(true);
await queue.close();
await connection.quit();
writeFileSync(outPath, JSON.stringify({ lateness_ms: lateness, scheduled: n, first_due: t0 / 1000, last_fire: last / 1000,
  enqueue_done_before_first_due: enqueuedAt < t0 }));
process.exit(0);
