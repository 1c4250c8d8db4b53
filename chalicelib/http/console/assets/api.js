// The public API, called with the signed-in token. The token lives in sessionStorage (this tab
// only, gone when it closes), is sent as a bearer header, and never goes into a URL or a cookie.

const TOKEN_KEY = "tasksapi.token";
const ROLE_KEY = "tasksapi.role";

// The console is served at <base>/console (base is "" locally, "/<stage>" behind API Gateway).
export const BASE = location.pathname.replace(/\/console(\/.*)?$/, "");

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  get role() {
    return sessionStorage.getItem(ROLE_KEY);
  },
  /** The agent id is part of an agent token (tapi_<agent id hex>_<secret>). */
  get agentId() {
    const m = /^tapi_([0-9a-f]{32})_/.exec(this.token || "");
    if (!m) return null;
    const x = m[1];
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  },
  get isAdmin() {
    return this.role === "admin";
  },
  start(token, role) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(ROLE_KEY, role);
  },
  clear() {
    sessionStorage.clear();
  },
};

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    const p = problem && typeof problem === "object" && !Array.isArray(problem) ? problem : {};
    const title = typeof p.title === "string" && p.title ? p.title : genericTitle(status);
    super(title);
    this.status = status;
    this.title = title;
    this.detail = typeof p.detail === "string" ? p.detail : "";
    this.problem = p;
    this.retryAfter = retryAfter;
    this.errors = Array.isArray(p.errors)
      ? p.errors.filter((e) => e && typeof e === "object").map((e) => ({ field: String(e.field ?? ""), message: String(e.message ?? "") }))
      : [];
    if (status === 429 && retryAfter && !this.detail) this.detail = `Try again in ${retryAfter} s.`;
  }
}

function genericTitle(status) {
  if (status === 0) return "The service did not answer";
  if (status === 401) return "Your token was not accepted";
  if (status === 403) return "Not allowed";
  if (status === 404) return "Not found";
  if (status === 429) return "Too many requests";
  if (status >= 500) return "The service had a problem";
  return `Request failed (HTTP ${status})`;
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One API call; resolves to {data, headers, status} or throws ApiError. A GET that meets a
 * 429 with a short Retry-After waits and tries once more. */
export async function call(method, path, { body, query, headers, token, retry = true } = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const auth = token ?? session.token;
  const init = {
    method,
    headers: {
      Accept: "application/json, application/problem+json",
      ...(auth ? { Authorization: `Bearer ${auth}` } : {}),
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
      ...(headers || {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
  };
  let resp;
  try {
    resp = await fetch(url, init);
  } catch {
    throw new ApiError(0, { detail: "Check the connection and try again." });
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (resp.ok) return { data, headers: resp.headers, status: resp.status };
  const retryAfter = Number.parseInt(resp.headers.get("Retry-After") || "", 10) || null;
  if (resp.status === 429 && method === "GET" && retry && retryAfter !== null && retryAfter <= 10) {
    await sleep(retryAfter * 1000);
    return call(method, path, { body, query, headers, token, retry: false });
  }
  const err = new ApiError(resp.status, data, retryAfter);
  if (resp.status === 401 && !token) onUnauthorized(err);
  throw err;
}

export const get = (path, query) => call("GET", path, { query }).then((r) => r.data);
export const post = (path, body, headers) => call("POST", path, { body, headers }).then((r) => r.data);

const enc = encodeURIComponent;
export const api = {
  tasks: (query) => get("/tasks", query),
  task: (id) => call("GET", `/tasks/${enc(id)}`),
  create: (body) => post("/tasks", body, { "Idempotency-Key": crypto.randomUUID() }),
  update: (id, body, version) =>
    call("PUT", `/tasks/${enc(id)}`, { body, headers: version != null ? { "If-Match": `"${version}"` } : {} }).then((r) => r.data),
  action: (id, name, body) => post(`/tasks/${enc(id)}/${name}`, body),
  preview: (id, count = 10) => get(`/tasks/${enc(id)}/preview`, { count }),
  previewSchedule: (body) => post("/schedules/preview", body),
  runs: (id, query) => get(`/tasks/${enc(id)}/runs`, query),
  run: (id, runId) => get(`/tasks/${enc(id)}/runs/${enc(runId)}`),
  sendEvent: (body) => post("/events", body),
  agents: () => get("/agents"),
  createAgent: (name) => post("/agents", { name }),
  revokeAgent: (id) => post(`/agents/${enc(id)}/revoke`),
};
