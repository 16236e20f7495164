// The one way the console talks to the proxy: same-origin JSON requests carrying the key the
// user logged in with as `Authorization: Bearer`. The key lives in sessionStorage only (gone
// when the tab closes; never in localStorage, a cookie or a URL).

const KEY_SLOT = "modelux.console.key";

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public code = "",
  ) {
    super(message);
  }
}

export function storedKey(): string | null {
  return sessionStorage.getItem(KEY_SLOT);
}

export function storeKey(key: string): void {
  sessionStorage.setItem(KEY_SLOT, key);
}

export function forgetKey(): void {
  sessionStorage.removeItem(KEY_SLOT);
}

/** A JSON request; a non-2xx answer throws ApiError with the proxy's error message. */
export async function api<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, key = storedKey()): Promise<T> {
  const h: Record<string, string> = { accept: "application/json", ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  if (body !== undefined) h["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, `the proxy cannot be reached (${(e as Error).message})`);
  }
  const text = await res.text();
  let json: any = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const err = json && json.error ? json.error : null;
    throw new ApiError(res.status, err?.message ?? `${method} ${path}: HTTP ${res.status}`, err?.code ?? "");
  }
  return json as T;
}

export type Role = "admin" | "viewer" | "project";
export interface Who {
  role: Role;
  name: string;
  project: string;
}

/** Who the key belongs to (GET /v1/whoami): the console hides write controls for non-admins. */
export async function whoami(key?: string): Promise<Who> {
  return api<Who>("GET", "/v1/whoami", undefined, {}, key ?? storedKey());
}

let current: Who | null = null;
export function setWho(w: Who | null): void {
  current = w;
}
export function getWho(): Who | null {
  return current;
}
/** Write controls are shown to admin keys only (the proxy refuses the rest anyway). */
export function isAdmin(): boolean {
  return current?.role === "admin";
}
