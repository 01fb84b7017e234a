// CPU time of other processes, and a V8 CPU profile of this one summed by function.
import * as fs from "node:fs";
import { Session } from "node:inspector";

/** utime + stime of a process in microseconds (from /proc, clock ticks of 10 ms). */
export function cpuMicrosOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10000;
}

/**
 * CPU time of every thread of a process so far in microseconds, from schedstat (nanoseconds): fine
 * enough for a few percent where cpuMicrosOf's 10 ms ticks are not. Threads that ended are not counted.
 */
export function threadCpuMicrosOf(pid: number): number {
  let ns = 0;
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return ns / 1000;
}

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  samples: number[];
}

/** The busy samples of a profile, two ways, as "percent  function  file:line" lines. */
export interface CpuProfileSummary {
  /** Samples outside (idle). */
  busySamples: number;
  /** By the function that was running (native and node: internals by their own names). */
  self: string[];
  /** By the nearest caller in our sources (src/): what node:crypto, dgram etc. did on whose behalf. */
  ours: string[];
}

/**
 * Starts sampling this process's CPU (main thread); the returned function stops and summarizes the
 * `top` entries. Sampling adds its own cost: figures measured while it runs are not comparable
 * with unprofiled ones.
 */
export async function startCpuProfile(): Promise<(top?: number) => Promise<CpuProfileSummary>> {
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object): Promise<unknown> =>
    new Promise((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))));
  await post("Profiler.enable");
  // 100 us between samples: a resumed handshake takes a few hundred, so each one is sampled a few times.
  await post("Profiler.setSamplingInterval", { interval: 100 });
  await post("Profiler.start");
  return async (top = 12) => {
    const { profile } = (await post("Profiler.stop")) as { profile: CpuProfile };
    session.disconnect();
    return summarize(profile, top);
  };
}

function summarize(profile: CpuProfile, top: number): CpuProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);
  // Paths relative to the build's root (dist/ or any --outDir), so the lines name our sources.
  const label = (f: CpuProfile["nodes"][number]["callFrame"]): string =>
    `${f.functionName || "(anonymous)"}${f.url ? `  ${f.url.replace(/^.*?\/(src|bench|test)\//, "$1/")}:${f.lineNumber + 1}` : ""}`;
  const self = new Map<string, number>();
  const ours = new Map<string, number>();
  const add = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);
  let busy = 0;
  for (const id of profile.samples) {
    const n = byId.get(id);
    if (!n || n.callFrame.functionName === "(idle)") continue;
    busy++;
    add(self, label(n.callFrame));
    let owner: typeof n | undefined = n;
    while (owner && !/\/src\//.test(owner.callFrame.url)) owner = byId.get(parentOf.get(owner.id) ?? -1);
    add(ours, owner ? label(owner.callFrame) : `(not under src/) ${label(n.callFrame)}`);
  }
  const lines = (m: Map<string, number>): string[] =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => `${((v / Math.max(1, busy)) * 100).toFixed(1).padStart(5)}%  ${k}`);
  return { busySamples: busy, self: lines(self), ours: lines(ours) };
}
