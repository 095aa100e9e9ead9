// Hash routes: "#/tasks?queue=emails&state=DEAD" → {parts: ["tasks"], params}. Filters
// live in the URL, so a filtered view can be bookmarked, shared and reloaded.

export function parseHash(hash = location.hash) {
  const [pathPart, query = ""] = hash.replace(/^#\/?/, "").split("?");
  const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query) };
}

export function href(path, params = {}) {
  const query = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== "" && v != null),
  ).toString();
  return `#/${path}${query ? `?${query}` : ""}`;
}

export function go(path, params = {}) {
  location.hash = href(path, params);
}
