// The console's shell: log-in, navigation and the hash router (#/traces, #/trace/<id>, ...).
// Everything is read from the proxy's JSON API with the logged-in key; the static assets hold
// no data.

import "./style.css";
import { ApiError, forgetKey, getWho, setWho, storeKey, storedKey, whoami } from "./api";
import { clear, h } from "./dom";
import { budgetsPage, configsPage, healthPage, plotsPage, tracePage, tracesPage } from "./pages";

const app = document.getElementById("app")!;
const nav = document.getElementById("nav")!;
const whoEl = document.getElementById("who")!;


const NAV: [string, string][] = [
  ["#/traces", "Traces"],
  ["#/plots", "Spend & latency"],
  ["#/budgets", "Budgets"],
  ["#/health", "Health"],
  ["#/configs", "Configs"],
];

function loginPage(message = ""): void {
  clear(nav);
  clear(whoEl);
  const input = h("input", { id: "key", type: "password", placeholder: "mlx-…", autocomplete: "off", required: true }) as HTMLInputElement;
  const err = h("div", { id: "login-error", class: "error", role: "alert", hidden: !message }, message);
  const form = h(
    "form",
    { id: "login", class: "card narrow" },
    h("h1", {}, "Log in"),
    h("p", {}, "Use a modelux admin or viewer key. It is kept in this tab only (sessionStorage)."),
    h("label", { for: "key" }, "API key"),
    input,
    h("button", { type: "submit", id: "login-submit" }, "Log in"),
    err,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    try {
      const w = await whoami(key);
      storeKey(key);
      setWho(w);
      if (!location.hash || location.hash === "#/login") location.hash = "#/traces";
      else void route();
    } catch (ex) {
      err.hidden = false;
      err.textContent =
        ex instanceof ApiError && ex.status === 401
          ? `Login failed: ${ex.message}`
          : `Login failed: ${(ex as Error).message}`;
    }
  });
  clear(app);
  app.appendChild(form);
  input.focus();
}

function renderShell(): void {
  clear(nav);
  const here = location.hash.split("/")[1] ?? "";
  for (const [href, label] of NAV) {
    const active = href.split("/")[1] === here || (here === "trace" && href === "#/traces");
    nav.appendChild(h("a", { href, class: active ? "active" : "" }, label));
  }
  clear(whoEl);
  const who = getWho();
  if (who) {
    whoEl.appendChild(h("span", { id: "role", class: `role ${who.role}` }, `${who.name || "key"} · ${who.role}${who.project ? " · " + who.project : ""}`));
    whoEl.appendChild(
      h("button", { id: "logout", class: "link", onclick: () => { forgetKey(); setWho(null); location.hash = "#/login"; } }, "Log out"),
    );
  }
}

async function route(): Promise<void> {
  if (!storedKey()) return loginPage();
  if (!getWho()) {
    try {
      setWho(await whoami());
    } catch (e) {
      forgetKey();
      return loginPage(e instanceof ApiError && e.status === 401 ? `Login failed: ${e.message}` : (e as Error).message);
    }
  }
  const [, page = "", ...rest] = location.hash.split("/");
  if (page === "" || page === "login") {
    location.hash = "#/traces";
    return;
  }
  renderShell();
  clear(app);
  const arg = decodeURIComponent(rest.join("/"));
  const view =
    page === "trace" ? tracePage(arg)
    : page === "plots" ? plotsPage()
    : page === "budgets" ? budgetsPage()
    : page === "health" ? healthPage()
    : page === "configs" ? configsPage(arg)
    : tracesPage();
  app.appendChild(view);
}

window.addEventListener("hashchange", () => void route());
void route();
