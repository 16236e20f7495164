// Spend and latency over time, by model, provider or project: the one module the plots read.
//
// The series are computed in the browser from GET /v1/traces (the newest `limit` traces of the
// window). When the proxy's OpenAPI document lists the trace analytics endpoints
// (GET /v1/analytics/spend with time buckets, GET /v1/analytics/latency), spend per bucket and
// the totals come from them instead, computed by the server over every trace of the window;
// latency over time stays client-side (the server has no bucketed latency). An answer of
// another shape than expected falls back to the traces. Nothing else in the console changes.

import { api } from "./api";

export type Dimension = "model" | "provider" | "project";

export interface Series {
  /** bucket start times, unix seconds, ascending */
  times: number[];
  /** group name → per-bucket values (null = no request in that bucket) */
  spend: Map<string, (number | null)[]>;
  p95: Map<string, (number | null)[]>;
  totals: { group: string; requests: number; errors: number; cost: number; p50: number; p95: number }[];
  source: "traces" | "analytics";
  traces: number;
  /** bucket width, seconds */
  bucketS: number;
}

export const SPEND_PATH = "/v1/analytics/spend";
export const LATENCY_PATH = "/v1/analytics/latency";

let documented: Set<string> | null = null;

async function documentedPaths(): Promise<Set<string>> {
  if (documented === null) {
    try {
      const doc = await api<any>("GET", "/openapi.json");
      documented = new Set(Object.keys((doc && doc.paths) || {}));
    } catch {
      documented = new Set();
    }
  }
  return documented;
}

/** The served (or last) attempt of a trace: what it is charged to. */
export function servedAttempt(t: any): any {
  const at: any[] = Array.isArray(t.attempts) ? t.attempts : [];
  return at.find((a) => a.outcome === "ok") ?? at[at.length - 1] ?? {};
}

function groupOf(t: any, by: Dimension): string {
  if (by === "project") return t.project || "(none)";
  const a = servedAttempt(t);
  return (by === "model" ? a.model : a.provider) || "(none)";
}

function costOf(t: any): number {
  const c = t.cost;
  if (typeof c === "number") return c;
  if (c && typeof c === "object") return Number(c.total_usd ?? c.usd ?? c.total ?? 0) || 0;
  return 0;
}

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

function pickBucket(spanS: number): number {
  for (const b of [10, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400]) if (spanS / b <= 60) return b;
  return 86400;
}

export async function loadSeries(by: Dimension, sinceS: number, limit = 1000): Promise<Series> {
  const q = new URLSearchParams({ limit: String(limit), since: String(Math.floor(sinceS)) });
  const list = await api<any>("GET", `/v1/traces?${q}`);
  const s = fromTraces(list.data ?? [], by, sinceS, Date.now() / 1000);
  const paths = await documentedPaths();
  if (s.times.length && paths.has(SPEND_PATH)) await fromAnalytics(s, by, paths.has(LATENCY_PATH));
  return s;
}

/** Buckets span the whole window [sinceS, untilS] (at most 60 of them), so the time axis is
 *  the window the user chose even when the traffic sits in a few seconds of it. */
export function fromTraces(traces: any[], by: Dimension, sinceS: number, untilS: number): Series {
  const rows = traces
    .map((t) => ({ t: Date.parse(t.time) / 1000, g: groupOf(t, by), cost: costOf(t), ms: Number(t.total_ms ?? t.duration_ms) || 0, ok: !!t.ok }))
    .filter((r) => !isNaN(r.t))
    .sort((a, b) => a.t - b.t);
  const out: Series = { times: [], spend: new Map(), p95: new Map(), totals: [], source: "traces", traces: rows.length, bucketS: 0 };
  if (!rows.length) return out;
  const t0 = Math.min(sinceS, rows[0].t), t1 = Math.max(untilS, rows[rows.length - 1].t);
  const bucket = pickBucket(Math.max(1, t1 - t0));
  out.bucketS = bucket;
  const start = Math.floor(t0 / bucket) * bucket;
  const n = Math.floor((t1 - start) / bucket) + 1;
  out.times = Array.from({ length: n }, (_, i) => start + i * bucket);
  const groups = [...new Set(rows.map((r) => r.g))].sort();
  const lat = new Map<string, number[][]>();
  for (const g of groups) {
    out.spend.set(g, Array(n).fill(null));
    lat.set(g, Array.from({ length: n }, () => []));
  }
  for (const r of rows) {
    const i = Math.floor((r.t - start) / bucket);
    const s = out.spend.get(r.g)!;
    s[i] = (s[i] ?? 0) + r.cost;
    if (r.ok) lat.get(r.g)![i].push(r.ms);
  }
  for (const g of groups) {
    out.p95.set(g, lat.get(g)!.map((xs) => (xs.length ? percentile(xs.sort((a, b) => a - b), 95) : null)));
    const mine = rows.filter((r) => r.g === g);
    const ms = mine.filter((r) => r.ok).map((r) => r.ms).sort((a, b) => a - b);
    out.totals.push({
      group: g,
      requests: mine.length,
      errors: mine.filter((r) => !r.ok).length,
      cost: mine.reduce((s, r) => s + r.cost, 0),
      p50: percentile(ms, 50),
      p95: percentile(ms, 95),
    });
  }
  return out;
}

/** Spend per bucket and the totals from the server, on the same buckets as `s`. */
async function fromAnalytics(s: Series, by: Dimension, latency: boolean): Promise<void> {
  const since = s.times[0], until = s.times[s.times.length - 1] + s.bucketS;
  const q = new URLSearchParams({ by, bucket: String(s.bucketS), since: String(since), until: String(until) });
  let doc: any;
  try {
    doc = await api<any>("GET", `${SPEND_PATH}?${q}`);
  } catch {
    return; // keep the client-side series
  }
  if (!doc || !Array.isArray(doc.buckets) || !Array.isArray(doc.rows)) return;
  const spend = new Map<string, (number | null)[]>();
  for (const b of doc.buckets) {
    const i = Math.round((Date.parse(b.start) / 1000 - since) / s.bucketS);
    if (!(i >= 0 && i < s.times.length) || !Array.isArray(b.rows)) return;
    for (const r of b.rows) {
      const g = String(r.key || "(none)");
      if (!spend.has(g)) spend.set(g, Array(s.times.length).fill(null));
      const v = spend.get(g)!;
      v[i] = (v[i] ?? 0) + (Number(r.total_usd) || 0);
    }
  }
  const lat = new Map<string, any>();
  if (latency && by !== "project") {
    try {
      const l = await api<any>("GET", `${LATENCY_PATH}?${new URLSearchParams({ by, since: String(since), until: String(until) })}`);
      for (const r of l.rows ?? []) lat.set(String(r.key), r);
    } catch {
      /* the client-side percentiles stay */
    }
  }
  const old = new Map(s.totals.map((t) => [t.group, t]));
  s.spend = spend;
  s.totals = doc.rows.map((r: any) => {
    const g = String(r.key || "(none)");
    const l = lat.get(g), o = old.get(g);
    return {
      group: g,
      requests: Number(r.requests) || 0,
      errors: o?.errors ?? 0,
      cost: Number(r.total_usd) || 0,
      p50: l ? Number(l.p50_ms) : o?.p50 ?? NaN,
      p95: l ? Number(l.p95_ms) : o?.p95 ?? NaN,
    };
  });
  for (const g of s.p95.keys()) if (!spend.has(g)) spend.set(g, Array(s.times.length).fill(null));
  s.source = "analytics";
}
