// The admin API, relative to the console's own URL (/ui/ → /), so a proxy prefix keeps working.
const base = new URL("../", window.location.href);

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function url(path, params = {}) {
  const out = new URL(path.replace(/^\//, ""), base);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") out.searchParams.set(name, value);
  }
  return out;
}

async function request(method, path, params) {
  const response = await fetch(url(path, params), { method, headers: { accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.message || response.statusText);
  return body;
}

export const get = (path, params) => request("GET", path, params);
export const patch = (path, params) => request("PATCH", path, params);
