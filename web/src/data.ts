// Spend and latency over time, by model, provider or project: the one module the plots read.
//
// Today it computes the series in the browser from GET /v1/traces (the newest `limit` traces
// of the window). When the proxy's OpenAPI document lists a server-side time-series endpoint
// (ANALYTICS_PATH), the series come from it instead; nothing else in the console changes.

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

/** The server-side endpoint used when present: GET ?by=&since=&bucket_s= →
 *  {"data":[{"time": unix_s, "group": "...", "requests": n, "errors": n, "cost_usd": x, "p50_ms": x, "p95_ms": x}]} */
export const ANALYTICS_PATH = "/v1/analytics/timeseries";

let analyticsAvailable: boolean | null = null;

async function hasAnalytics(): Promise<boolean> {
  if (analyticsAvailable === null) {
    try {
      const doc = await api<any>("GET", "/openapi.json");
      analyticsAvailable = !!(doc && doc.paths && doc.paths[ANALYTICS_PATH]);
    } catch {
      analyticsAvailable = false;
    }
  }
  return analyticsAvailable;
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
  if (await hasAnalytics()) return fromAnalytics(by, sinceS);
  const q = new URLSearchParams({ limit: String(limit), since: String(Math.floor(sinceS)) });
  const list = await api<any>("GET", `/v1/traces?${q}`);
  return fromTraces(list.data ?? [], by, sinceS, Date.now() / 1000);
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

async function fromAnalytics(by: Dimension, sinceS: number): Promise<Series> {
  const q = new URLSearchParams({ by, since: String(Math.floor(sinceS)) });
  const doc = await api<any>("GET", `${ANALYTICS_PATH}?${q}`);
  const rows: any[] = doc.data ?? [];
  const times = [...new Set(rows.map((r) => Number(r.time)))].sort((a, b) => a - b);
  const idx = new Map(times.map((t, i) => [t, i]));
  const out: Series = { times, spend: new Map(), p95: new Map(), totals: [], source: "analytics", traces: 0, bucketS: times.length > 1 ? times[1] - times[0] : 0 };
  const tot = new Map<string, { requests: number; errors: number; cost: number; p50: number; p95: number }>();
  for (const r of rows) {
    const g = String(r.group || "(none)");
    if (!out.spend.has(g)) {
      out.spend.set(g, Array(times.length).fill(null));
      out.p95.set(g, Array(times.length).fill(null));
      tot.set(g, { requests: 0, errors: 0, cost: 0, p50: NaN, p95: NaN });
    }
    const i = idx.get(Number(r.time))!;
    out.spend.get(g)![i] = Number(r.cost_usd) || 0;
    out.p95.get(g)![i] = r.p95_ms ?? null;
    const t = tot.get(g)!;
    t.requests += Number(r.requests) || 0;
    t.errors += Number(r.errors) || 0;
    t.cost += Number(r.cost_usd) || 0;
    t.p95 = Math.max(isNaN(t.p95) ? 0 : t.p95, Number(r.p95_ms) || 0);
    out.traces += Number(r.requests) || 0;
  }
  for (const [group, t] of tot) out.totals.push({ group, ...t });
  return out;
}
