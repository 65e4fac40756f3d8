// Audit trail page: the records of /api/audit (the caller's centre, ?slide_id= for one slide)
// as a table. Text goes in through textContent only: actors and details are data, not markup.
(function () {
  "use strict";

  const status = document.getElementById("status");
  const body = document.querySelector("#audit tbody");
  const slideId = new URLSearchParams(window.location.search).get("slide_id");
  const query = slideId ? `?slide_id=${encodeURIComponent(slideId)}` : "";
  document.getElementById("audit-csv").href =
    `/api/audit${query}${query ? "&" : "?"}format=csv`;

  function summary(detail) {
    if (!detail || typeof detail !== "object") return "";
    if (detail.regions) {
      return `${detail.tiles} tiles, levels ${Object.keys(detail.regions).join(", ")}`;
    }
    return JSON.stringify(detail);
  }

  function row(rec) {
    const tr = document.createElement("tr");
    tr.dataset.action = rec.action;
    tr.dataset.actor = rec.actor;
    const cells = [rec.seq, String(rec.at).replace("T", " ").slice(0, 19), rec.actor,
      rec.action, rec.outcome, rec.slide_id || "", summary(rec.detail)];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = String(value ?? "");
      tr.appendChild(td);
    }
    return tr;
  }

  fetch(`/api/audit${query}`, { headers: { Accept: "application/json" } })
    .then(async (r) => {
      if (r.status === 403) throw new Error("Only the centre's admin can read its audit trail.");
      if (r.status === 404) throw new Error("No such slide.");
      if (!r.ok) throw new Error(`The audit trail could not be loaded (HTTP ${r.status}).`);
      const truncated = r.headers.get("X-Audit-Truncated") === "true";
      return r.json().then((records) => ({ records, truncated }));
    })
    .then(({ records, truncated }) => {
      status.textContent = `${records.length} record${records.length === 1 ? "" : "s"}` +
        (slideId ? ` for slide ${slideId}` : "") +
        (truncated ? " (the newest ones; `iain audit export` has them all)" : "");
      for (const rec of records) body.appendChild(row(rec));
      document.body.dataset.state = "loaded";
    })
    .catch((err) => {
      status.textContent = err.message;
      status.className = "error";
      document.body.dataset.state = "error";
    });
})();
