// The console's pages. Each returns its root element at once and fills it as data arrives.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { api, ApiError, isAdmin } from "./api";
import { loadSeries, servedAttempt, type Dimension } from "./data";
import { clear, errorBox, fmtMs, fmtTime, fmtUsd, h } from "./dom";

// ---------------------------------------------------------------------------- traces

const FILTERS: [string, string, string][] = [
  ["model", "Model", "gpt-4o-mini"],
  ["provider", "Provider", "openai"],
  ["config", "Config", "@production"],
  ["project", "Project", ""],
  ["end_user", "End user", ""],
  ["tag", "Tag", "team=search"],
];
let lastFilters: Record<string, string> = { limit: "50" };

/** A completion id (chatcmpl-X) names the same request as the trace id req_X. */
export function traceIdOf(id: string): string {
  const s = id.trim();
  return s.startsWith("chatcmpl-") ? "req_" + s.slice("chatcmpl-".length) : s;
}

function localToIso(v: string): string {
  if (!v) return "";
  const d = new Date(v);
  return isNaN(d.getTime()) ? v : d.toISOString().replace(/\.\d+Z$/, "Z");
}

export function tracesPage(): HTMLElement {
  const results = h("div", { id: "trace-results" });
  const inputs: Record<string, HTMLInputElement | HTMLSelectElement> = {};
  const field = (name: string, label: string, el: HTMLInputElement | HTMLSelectElement) => {
    inputs[name] = el;
    el.id = `f-${name}`;
    el.setAttribute("name", name);
    if (lastFilters[name]) el.value = lastFilters[name];
    return h("label", { class: "field" }, label, el);
  };
  const idInput = h("input", { id: "f-id", placeholder: "req_… or chatcmpl-…", autocomplete: "off" }) as HTMLInputElement;
  const form = h(
    "form",
    { id: "trace-search", class: "filters" },
    h("label", { class: "field wide" }, "Request or completion id", idInput),
    FILTERS.map(([n, l, ph]) => field(n, l, h("input", { placeholder: ph, autocomplete: "off" }) as HTMLInputElement)),
    field("status", "Status", h("select", {}, h("option", { value: "" }, "any"), h("option", { value: "ok" }, "ok"), h("option", { value: "error" }, "error")) as HTMLSelectElement),
    field("since", "Since", h("input", { type: "datetime-local" }) as HTMLInputElement),
    field("until", "Until", h("input", { type: "datetime-local" }) as HTMLInputElement),
    field("limit", "Limit", h("input", { type: "number", min: 1, max: 1000 }) as HTMLInputElement),
    h("button", { type: "submit", id: "search" }, "Search"),
  );
  const run = async () => {
    clear(results);
    results.appendChild(h("p", { class: "muted" }, "Searching…"));
    const id = idInput.value.trim();
    try {
      let rows: any[];
      if (id) {
        rows = [await api("GET", `/v1/traces/${encodeURIComponent(traceIdOf(id))}`)];
      } else {
        const q = new URLSearchParams();
        lastFilters = {};
        for (const [n, el] of Object.entries(inputs)) {
          let v = el.value.trim();
          lastFilters[n] = v;
          if (n === "since" || n === "until") v = localToIso(v);
          if (v) q.set(n, v);
        }
        rows = (await api<any>("GET", `/v1/traces?${q}`)).data ?? [];
      }
      clear(results);
      results.appendChild(traceTable(rows));
    } catch (e) {
      clear(results);
      results.appendChild(e instanceof ApiError && e.status === 404 && id ? errorBox(new Error(`No trace with id ${traceIdOf(id)}`)) : errorBox(e));
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void run();
  });
  void run();
  return h("section", { id: "page-traces" }, h("h1", {}, "Traces"), form, results);
}

function traceTable(rows: any[]): HTMLElement {
  if (!rows.length) return h("p", { class: "muted", id: "no-traces" }, "No trace matches these filters.");
  return h(
    "table",
    { class: "grid", id: "traces-table" },
    h("thead", {}, h("tr", {}, ["Time", "Request", "Config", "Served by", "Attempts", "Status", "Latency", "Cost", "Project"].map((t) => h("th", {}, t)))),
    h(
      "tbody",
      {},
      rows.map((t) => {
        const a = servedAttempt(t);
        return h(
          "tr",
          { "data-id": t.request_id },
          h("td", {}, fmtTime(t.time)),
          h("td", {}, h("a", { href: `#/trace/${encodeURIComponent(t.request_id)}`, class: "trace-link mono" }, t.request_id)),
          h("td", {}, `${t.config ?? ""}${t.config_version ? " v" + t.config_version : ""}`),
          h("td", {}, t.served_model ? `${t.served_provider}/${t.served_model}` : a.model ? `(${a.provider}/${a.model})` : ""),
          h("td", { class: "num" }, String((t.attempts ?? []).length)),
          h("td", {}, h("span", { class: t.ok ? "pill ok" : "pill bad" }, t.ok ? "ok" : t.error_kind || "error")),
          h("td", { class: "num" }, fmtMs(t.total_ms)),
          h("td", { class: "num" }, fmtUsd(t.cost?.total_usd)),
          h("td", {}, t.project ?? ""),
        );
      }),
    ),
  );
}

// ---------------------------------------------------------------------------- one trace

export function tracePage(id: string): HTMLElement {
  const root = h("section", { id: "page-trace" }, h("p", {}, h("a", { href: "#/traces" }, "← Traces")), h("h1", {}, "Decision ", h("span", { class: "mono" }, id)));
  api("GET", `/v1/traces/${encodeURIComponent(traceIdOf(id))}`)
    .then((t) => root.appendChild(decisionView(t)))
    .catch((e) => root.appendChild(errorBox(e)));
  return root;
}

function kv(pairs: [string, unknown][]): HTMLElement {
  return h(
    "dl",
    { class: "kv" },
    pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v))]),
  );
}

function decisionView(t: any): HTMLElement {
  const attempts: any[] = t.attempts ?? [];
  const total = Math.max(Number(t.total_ms) || 0, ...attempts.map((a) => (Number(a.start_offset_ms) || 0) + (Number(a.duration_ms) || 0)), 0.001);
  const timeline = h(
    "ol",
    { class: "timeline", id: "attempt-timeline" },
    attempts.map((a, i) => {
      const bar = h("div", { class: `bar ${a.ok ? "ok" : "bad"}` });
      // Position by CSSOM (allowed by the CSP, unlike style attributes).
      bar.style.left = `${(100 * (Number(a.start_offset_ms) || 0)) / total}%`;
      bar.style.width = `${Math.max(0.5, (100 * (Number(a.duration_ms) || 0)) / total)}%`;
      return h(
        "li",
        { class: "attempt", "data-attempt": i + 1 },
        h("div", { class: "attempt-head" }, h("strong", {}, `#${i + 1} ${a.provider}/${a.model}`), " ", h("span", { class: a.ok ? "pill ok" : "pill bad" }, a.outcome || (a.ok ? "ok" : "error")), a.status ? ` HTTP ${a.status}` : ""),
        h("div", { class: "track" }, bar),
        h(
          "div",
          { class: "why" },
          h("span", { class: "why-tried" }, h("em", {}, "why tried: "), a.why_tried || "—"),
          h("span", { class: "why-ended" }, h("em", {}, "why ended: "), a.why_ended || "—"),
        ),
        h("div", { class: "muted" }, `starts at ${fmtMs(a.start_offset_ms)} · took ${fmtMs(a.duration_ms)}${a.ttft_ms ? " · ttft " + fmtMs(a.ttft_ms) : ""} · ${fmtUsd(a.cost?.total_usd)}${a.error ? " · " + a.error : ""}`),
      );
    }),
  );
  return h(
    "div",
    { class: "decision" },
    h("div", { class: `card verdict ${t.ok ? "ok" : "bad"}`, id: "decision" }, h("strong", {}, t.ok ? "Served" : "Failed"), ": ", t.decision || t.reason || t.error_message || ""),
    kv([
      ["time", fmtTime(t.time)],
      ["config", `${t.config ?? ""}${t.config_version ? " v" + t.config_version : ""}`],
      ["strategy", t.strategy],
      ["served by", t.served_model ? `${t.served_provider}/${t.served_model}` : ""],
      ["reason", t.reason !== t.decision ? t.reason : ""],
      ["error", t.error_kind ? `${t.error_kind}: ${t.error_message}` : ""],
      ["latency", fmtMs(t.total_ms)],
      ["time to first token", t.ttft_ms ? fmtMs(t.ttft_ms) : ""],
      ["cost", fmtUsd(t.cost?.total_usd)],
      ["tokens", t.usage ? `${t.usage.prompt_tokens} in / ${t.usage.completion_tokens} out` : ""],
      ["project", t.project],
      ["end user", t.end_user],
      ["API key", t.api_key_id],
      ["stream", t.stream ? "yes" : "no"],
      ["tags", t.tags && Object.keys(t.tags).length ? t.tags : ""],
    ]),
    (t.budget_actions ?? []).length ? h("div", {}, h("h2", {}, "Budgets"), h("ul", {}, (t.budget_actions as string[]).map((b) => h("li", {}, b)))) : null,
    h("h2", {}, `Attempts (${attempts.length})`),
    timeline,
  );
}

// ---------------------------------------------------------------------------- spend and latency

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
let plots: uPlot[] = [];

export function plotsPage(): HTMLElement {
  for (const p of plots) p.destroy();
  plots = [];
  const by = h("select", { id: "by" }, (["model", "provider", "project"] as Dimension[]).map((d) => h("option", { value: d }, d))) as HTMLSelectElement;
  const win = h("select", { id: "window" }, [["3600", "last hour"], ["86400", "last day"], ["604800", "last week"], ["2592000", "last 30 days"]].map(([v, l]) => h("option", { value: v }, l))) as HTMLSelectElement;
  win.value = "86400";
  const body = h("div", { id: "plots" });
  const draw = async () => {
    for (const p of plots) p.destroy();
    plots = [];
    clear(body);
    try {
      const s = await loadSeries(by.value as Dimension, Date.now() / 1000 - Number(win.value));
      if (!s.times.length) {
        body.appendChild(h("p", { class: "muted" }, "No traffic in this window."));
        return;
      }
      const groups = [...s.spend.keys()];
      const width = Math.min(1260, Math.max(400, (body.clientWidth || 920) - 20));
      const mk = (title: string, id: string, data: Map<string, (number | null)[]>, unit: (v: number) => string) => {
        const el = h("div", { class: "plot", id });
        body.appendChild(h("h2", {}, title));
        body.appendChild(el);
        plots.push(
          new uPlot(
            {
              width,
              height: 260,
              series: [{}, ...groups.map((g, i) => ({ label: g, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true, points: { show: true }, value: (_u: uPlot, v: number | null) => (v === null ? "—" : unit(v)) }))],
              axes: [{}, { values: (_u: uPlot, vs: number[]) => vs.map(unit), size: 80 }],
            },
            [s.times, ...groups.map((g) => data.get(g) ?? Array(s.times.length).fill(null))] as uPlot.AlignedData,
            el,
          ),
        );
      };
      const per = s.bucketS >= 3600 ? `${s.bucketS / 3600} h` : s.bucketS >= 60 ? `${s.bucketS / 60} min` : `${s.bucketS} s`;
      mk(`Spend per ${per} by ${by.value}`, "plot-spend", s.spend, (v) => fmtUsd(v));
      mk(`p95 latency per ${per} by ${by.value}`, "plot-latency", s.p95, (v) => fmtMs(v));
      body.appendChild(
        h(
          "table",
          { class: "grid", id: "totals" },
          h("thead", {}, h("tr", {}, [by.value, "Requests", "Errors", "Spend", "p50", "p95"].map((t) => h("th", {}, t)))),
          h("tbody", {}, s.totals.map((r) => h("tr", {}, h("td", {}, r.group), h("td", { class: "num" }, String(r.requests)), h("td", { class: "num" }, String(r.errors)), h("td", { class: "num" }, fmtUsd(r.cost)), h("td", { class: "num" }, fmtMs(r.p50)), h("td", { class: "num" }, fmtMs(r.p95))))),
        ),
      );
      body.appendChild(h("p", { class: "muted" }, s.source === "traces" ? `Computed from the newest ${s.traces} traces of the window.` : `Spend and totals from the proxy's analytics (every trace of the window); latency over time from the newest ${s.traces} traces.`));
    } catch (e) {
      body.appendChild(errorBox(e));
    }
  };
  by.addEventListener("change", () => void draw());
  win.addEventListener("change", () => void draw());
  queueMicrotask(() => void draw());
  return h("section", { id: "page-plots" }, h("h1", {}, "Spend & latency"), h("div", { class: "filters" }, h("label", { class: "field" }, "By", by), h("label", { class: "field" }, "Window", win)), body);
}

// ---------------------------------------------------------------------------- budgets

export function alertState(b: any): "exceeded" | "alert" | "ok" {
  const pct = Number(b.percent) || 0;
  const over = (lim: any, used: any) => lim !== null && lim !== undefined && Number(used) >= Number(lim);
  if (pct >= 100 || over(b.limit_requests, b.requests) || over(b.limit_tokens, b.tokens)) return "exceeded";
  if ((b.alerts_fired ?? []).length) return "alert";
  return "ok";
}

export function budgetsPage(): HTMLElement {
  const body = h("div", {});
  api<any>("GET", "/v1/budgets")
    .then((snap) => {
      const rows: any[] = snap.budgets ?? [];
      if (!rows.length) return body.appendChild(h("p", { class: "muted" }, "No budget applies to this key."));
      const lim = (b: any) => [b.limit_usd !== null && b.limit_usd !== undefined ? fmtUsd(b.limit_usd) : "", b.limit_tokens ? `${b.limit_tokens} tokens` : "", b.limit_requests ? `${b.limit_requests} requests` : ""].filter(Boolean).join(" · ");
      body.appendChild(
        h(
          "table",
          { class: "grid", id: "budgets-table" },
          h("thead", {}, h("tr", {}, ["Budget", "Scope", "Window", "Spent", "Limit", "Used", "Requests", "Alerts fired", "State"].map((t) => h("th", {}, t)))),
          h(
            "tbody",
            {},
            rows.map((b) => {
              const st = alertState(b);
              const meter = h("div", { class: "meter" }, h("div", { class: `fill ${st}` }));
              (meter.firstChild as HTMLElement).style.width = `${Math.min(100, Number(b.percent) || 0)}%`;
              return h(
                "tr",
                {},
                h("td", {}, b.name),
                h("td", {}, b.scope),
                h("td", {}, b.window_label || b.window),
                h("td", { class: "num" }, fmtUsd(b.spent_usd)),
                h("td", {}, lim(b)),
                h("td", {}, meter, `${(Number(b.percent) || 0).toFixed(1)}%`),
                h("td", { class: "num" }, String(b.requests ?? "")),
                h("td", {}, (b.alerts_fired ?? []).map((a: any) => `${a}%`).join(", ")),
                h("td", {}, h("span", { class: `pill ${st === "ok" ? "ok" : st === "alert" ? "warn" : "bad"}` }, st)),
              );
            }),
          ),
        ),
      );
    })
    .catch((e) => body.appendChild(errorBox(e)));
  return h("section", { id: "page-budgets" }, h("h1", {}, "Budgets"), body);
}

// ---------------------------------------------------------------------------- health

let healthTimer: number | undefined;

export function healthPage(): HTMLElement {
  if (healthTimer) clearInterval(healthTimer);
  const body = h("div", { id: "health" });
  const stamp = h("p", { class: "muted" });
  const load = async () => {
    if (!document.body.contains(body) && healthTimer) {
      clearInterval(healthTimer); // the user left the page
      healthTimer = undefined;
      return;
    }
    try {
      const s = await api<any>("GET", "/v1/health");
      clear(body);
      const targets: any[] = s.targets ?? [];
      if (!targets.length) body.appendChild(h("p", { class: "muted" }, s.enabled === false ? "Health tracking is off." : "No target has taken traffic yet."));
      else
        body.appendChild(
          h(
            "table",
            { class: "grid", id: "health-table" },
            h("thead", {}, h("tr", {}, ["Target", "Breaker", "Admits", "Error rate", "EWMA", "p50", "p95", "Samples", "Trips", "Why"].map((t) => h("th", {}, t)))),
            h(
              "tbody",
              {},
              targets.map((t) =>
                h(
                  "tr",
                  {},
                  h("td", {}, t.target),
                  h("td", {}, h("span", { class: `pill ${t.breaker === "closed" ? "ok" : t.breaker === "half_open" ? "warn" : "bad"}` }, t.breaker)),
                  h("td", {}, t.admits ? "yes" : "no"),
                  h("td", { class: "num" }, `${((Number(t.error_rate) || 0) * 100).toFixed(1)}%`),
                  h("td", { class: "num" }, fmtMs(t.ewma_ms)),
                  h("td", { class: "num" }, fmtMs(t.p50_ms)),
                  h("td", { class: "num" }, fmtMs(t.p95_ms)),
                  h("td", { class: "num" }, String(t.samples ?? "")),
                  h("td", { class: "num" }, String(t.trips ?? "")),
                  h("td", {}, [t.why_open, t.last_error, t.retry_in_ms ? `retry in ${fmtMs(t.retry_in_ms)}` : "", t.sits_out_ms ? `sits out ${fmtMs(t.sits_out_ms)}` : ""].filter(Boolean).join(" · ")),
                ),
              ),
            ),
          ),
        );
      if ((s.key_pools ?? []).length) body.appendChild(h("h2", {}, "Key pools"), );
      if ((s.key_pools ?? []).length) body.appendChild(h("pre", {}, JSON.stringify(s.key_pools, null, 2)));
      stamp.textContent = `Live: refreshed ${new Date().toLocaleTimeString()} (every 2 s)`;
    } catch (e) {
      clear(body);
      body.appendChild(errorBox(e));
    }
  };
  void load();
  healthTimer = window.setInterval(() => void load(), 2000);
  return h("section", { id: "page-health" }, h("h1", {}, "Provider health"), stamp, body);
}

// ---------------------------------------------------------------------------- configs

export function configsPage(slug: string): HTMLElement {
  const root = h("section", { id: "page-configs" }, h("h1", {}, "Configs"));
  const list = h("div", { class: "slugs" });
  root.appendChild(list);
  api<any>("GET", "/v1/configs")
    .then((doc) => {
      const items: any[] = doc.data ?? [];
      for (const c of items)
        list.appendChild(h("a", { href: `#/configs/${c.slug}`, class: `slug ${c.slug === slug ? "active" : ""}`, id: `slug-${c.slug}` }, `@${c.slug}`, h("span", { class: "muted" }, ` v${c.version}`)));
      if (!slug && items.length) location.hash = `#/configs/${items[0].slug}`;
    })
    .catch((e) => root.appendChild(errorBox(e)));
  if (slug) root.appendChild(configDetail(slug));
  return root;
}

function configDetail(slug: string): HTMLElement {
  const live = h("div", { id: "live-config" });
  const versions = h("div", { id: "versions" });
  const out = h("div", { id: "config-output" });
  const show = (title: string, ...content: (Node | string)[]) => {
    clear(out);
    out.appendChild(h("div", { class: "card" }, h("h2", {}, title), ...content));
  };
  const refresh = async () => {
    clear(versions);
    clear(live);
    try {
      const [cur, hist] = await Promise.all([api<any>("GET", `/v1/configs/${slug}`), api<any>("GET", `/v1/configs/${slug}/versions?limit=50`)]);
      live.appendChild(h("p", {}, "Live: ", h("strong", { id: "live-version" }, `version ${cur.version}`)));
      const rows: any[] = hist.data ?? hist.versions ?? [];
      versions.appendChild(
        h(
          "table",
          { class: "grid", id: "versions-table" },
          h("thead", {}, h("tr", {}, ["Version", "When", "Author", "Action", "Message", "Hash", ""].map((t) => h("th", {}, t)))),
          h(
            "tbody",
            {},
            rows.map((v) => {
              const n = Number(v.version);
              const actions = h("td", { class: "actions" });
              actions.appendChild(h("button", { class: "small", "data-action": "show", onclick: () => void showVersion(n) }, "Show"));
              if (n > 1) actions.appendChild(h("button", { class: "small", "data-action": "diff", onclick: () => void diff(n - 1, n) }, `Diff v${n - 1}→v${n}`));
              if (n !== cur.version) actions.appendChild(h("button", { class: "small", "data-action": "diff-live", onclick: () => void diff(n, cur.version) }, "Diff vs live"));
              if (isAdmin()) {
                actions.appendChild(h("button", { class: "small write", "data-action": "replay", onclick: () => void runReplay(n) }, "Replay"));
                if (n !== cur.version) actions.appendChild(h("button", { class: "small write danger", "data-action": "rollback", "data-version": n, onclick: (e: Event) => askRollback(n, cur.version, e.target as HTMLElement) }, `Roll back to v${n}`));
              }
              return h("tr", { "data-version": n, class: n === cur.version ? "live" : "" }, h("td", { class: "num" }, `v${n}${n === cur.version ? " (live)" : ""}`), h("td", {}, fmtTime(v.created ?? v.at)), h("td", {}, v.author ?? ""), h("td", {}, v.action ?? ""), h("td", {}, v.message ?? ""), h("td", { class: "mono" }, String(v.hash ?? "").slice(0, 12)), actions);
            }),
          ),
        ),
      );
      if (!isAdmin()) versions.appendChild(h("p", { class: "muted", id: "read-only" }, "Read-only: this key cannot roll back or replay."));
    } catch (e) {
      versions.appendChild(errorBox(e));
    }
  };
  const showVersion = async (n: number) => {
    try {
      const v = await api<any>("GET", `/v1/configs/${slug}/versions/${n}`);
      show(`@${slug} v${n}`, h("pre", { class: "code" }, JSON.stringify(v.document, null, 2)));
    } catch (e) {
      show("Error", errorBox(e));
    }
  };
  const diff = async (a: number, b: number) => {
    try {
      const d = await api<any>("GET", `/v1/configs/${slug}/diff?from=${a}&to=${b}`);
      const lines = String(d.text ?? "").split("\n");
      const pre = h("pre", { class: "code diff", id: "diff" }, lines.map((l) => h("span", { class: l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : l.startsWith("@@") ? "hunk" : "" }, l + "\n")));
      show(`Diff @${slug} v${a} → v${b}`, lines.join("").trim() ? pre : h("p", { class: "muted" }, "No difference."));
    } catch (e) {
      show("Error", errorBox(e));
    }
  };
  const askRollback = (n: number, liveVersion: number, btn: HTMLElement) => {
    const msg = h("input", { id: "rollback-message", placeholder: "why (kept in the audit log)", autocomplete: "off" }) as HTMLInputElement;
    const err = h("div", { id: "rollback-error" });
    show(
      `Roll back @${slug} to v${n}?`,
      h("p", {}, `This makes a new version equal to v${n} and puts it live at once (the live version is v${liveVersion}).`),
      msg,
      h(
        "button",
        {
          id: "confirm-rollback",
          class: "danger write",
          onclick: async () => {
            try {
              const r = await api<any>("POST", `/v1/configs/${slug}/rollback`, { version: n, message: msg.value }, { "if-match": `"${liveVersion}"` });
              show("Rolled back", h("p", { id: "rollback-done" }, `@${slug} is now v${r.version} (a copy of v${n}).`));
              await refresh();
            } catch (e) {
              clear(err);
              err.appendChild(errorBox(e));
            }
          },
        },
        `Roll back to v${n}`,
      ),
      h("button", { class: "link", onclick: () => clear(out) }, "Cancel"),
      err,
    );
    void btn;
  };
  const runReplay = async (n: number) => {
    show(`Replaying @${slug} v${n}…`, h("p", { class: "muted" }, "Replaying the stored traffic against this version (offline, no provider calls)."));
    try {
      const r = await api<any>("POST", `/v1/configs/${slug}/replay`, { version: n });
      show(`Replay of @${slug} v${n} over ${r.traces} stored requests`, replayReport(r));
    } catch (e) {
      show("Replay failed", errorBox(e));
    }
  };
  void refresh();
  return h("div", { class: "config-detail" }, h("h2", {}, `@${slug}`), live, versions, out);
}

function replayReport(r: any): HTMLElement {
  const cur = r.current ?? {}, cand = r.candidate ?? {};
  const metric = (label: string, key: string, f: (v: number) => string) => h("tr", {}, h("td", {}, label), h("td", { class: "num" }, f(cur[key])), h("td", { class: "num" }, f(cand[key])));
  const pct = (v: number) => (v === undefined ? "" : `${(v * 100).toFixed(1)}%`);
  return h(
    "div",
    { id: "replay-report" },
    h(
      "table",
      { class: "grid" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "current (recorded)"), h("th", {}, "candidate (replayed)"))),
      h(
        "tbody",
        {},
        metric("requests", "requests", String),
        metric("success rate", "success_rate", pct),
        metric("failover rate", "failover_rate", pct),
        metric("p50", "p50_ms", fmtMs),
        metric("p95", "p95_ms", fmtMs),
        metric("p99", "p99_ms", fmtMs),
        metric("cost", "cost_usd", fmtUsd),
        metric("cost / request", "cost_per_request_usd", fmtUsd),
      ),
    ),
    h("h3", {}, "Routes"),
    h("pre", { class: "code" }, JSON.stringify({ current: cur.routes, candidate: cand.routes }, null, 2)),
    (r.notes ?? []).length ? h("ul", {}, (r.notes as string[]).map((n) => h("li", {}, n))) : null,
  );
}
