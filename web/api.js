// @ts-check
// JSON calls to Plenary's HTTP API, shared by the meeting page and the invitation pages.
// A failed call throws an ApiError carrying the HTTP status and the server's `error` text.

export class ApiError extends Error {
  /** @param {string} message @param {number} status */
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/**
 * @param {"GET"|"POST"|"PUT"|"DELETE"} method
 * @param {string} path
 * @param {object} [body]
 * @returns {Promise<any>}
 */
export async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  /** @type {any} */
  let data = {};
  try {
    data = await res.json();
  } catch {}
  if (!res.ok) throw new ApiError(data.error || `HTTP ${res.status}`, res.status);
  return data;
}

/** The message of anything thrown. @param {unknown} err */
export const messageOf = (err) => (err instanceof Error ? err.message : String(err));
