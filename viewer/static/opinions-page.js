// Second opinions: requests asked of me at every peer (GET /api/inbox/opinions, relayed to the
// requester's node) and those I made here (GET /api/opinions), with their answers.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);

  const { csrf } = window.iainCommon;

  const el = window.iainCommon.classed;

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify(body || {}),
    }).then((r) => {
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return r.json();
    });
  }

  function facts(opinion, who) {
    const dl = el("dl");
    const add = (term, value) => { dl.append(el("dt", "", term), el("dd", "", value)); };
    add(who[0], who[1]);
    add("State", opinion.state);
    add("Urgency", opinion.urgency);
    const late = ["sent", "accepted"].includes(opinion.state) && new Date(opinion.due_at) < new Date();
    add("Due", new Date(opinion.due_at).toLocaleString() + (late ? " (overdue)" : ""));
    return dl;
  }

  function answerBlock(answer) {
    const box = el("div", "answer");
    box.appendChild(el("p", "answer-text", answer.text));
    const meta = [`agreement: ${answer.agreement}`];
    if (answer.diagnosis) meta.push(`diagnosis: ${answer.diagnosis}`);
    meta.push(`by ${answer.by} @ ${answer.centre}`);
    box.appendChild(el("p", "status", meta.join(" · ")));
    return box;
  }

  function inboxItem(o) {
    const item = el("article", "opinion");
    item.dataset.id = String(o.id);
    item.dataset.peer = o.peer;
    item.dataset.state = o.state;
    item.appendChild(el("h3", "", `#${o.id} from ${o.requester_centre}`));
    item.appendChild(facts(o, ["Asked of", o.consultant.name || `${o.consultant.centre} pool`]));
    item.appendChild(el("p", "question", o.question));
    const links = el("div", "buttons");
    for (const s of o.slides) {
      if (!s.live) continue;
      const a = el("a", "open-slide", `Open ${s.pseudonym}`);
      a.href = `/shared-view/${encodeURIComponent(o.peer)}/${encodeURIComponent(s.share_id)}?opinion=${o.id}`;
      links.appendChild(a);
    }
    if (o.state === "sent") {
      for (const verb of ["accept", "decline"]) {
        const b = el("button", `btn-${verb}`, verb === "accept" ? "Accept" : "Decline");
        b.type = "button";
        b.addEventListener("click", () =>
          post(`/api/inbox/opinions/${encodeURIComponent(o.peer)}/${o.id}/${verb}`).then(load));
        links.appendChild(b);
      }
    }
    item.appendChild(links);
    if (o.answer) item.appendChild(answerBlock(o.answer));
    return item;
  }

  function mineItem(o) {
    const item = el("article", "opinion");
    item.dataset.id = String(o.id);
    item.dataset.state = o.state;
    const to = o.consultant.name ? `${o.consultant.name} @ ${o.consultant.centre}` : `${o.consultant.centre} pool`;
    item.appendChild(el("h3", "", `#${o.id} to ${to}`));
    item.appendChild(facts(o, ["Slides", o.slides.map((s) => s.pseudonym).join(", ")]));
    item.appendChild(el("p", "question", o.question));
    const links = el("div", "buttons");
    for (const s of o.slides) {
      const a = el("a", "open-slide", "View slide");
      a.href = `/view/${encodeURIComponent(s.slide_id)}`;
      links.appendChild(a);
    }
    const report = el("a", "report", "Report");
    report.href = `/api/opinions/${o.id}/report.html`;
    links.appendChild(report);
    if (o.state !== "closed") {
      const close = el("button", "btn-close", "Close");
      close.type = "button";
      close.addEventListener("click", () => post(`/api/opinions/${o.id}/close`).then(load));
      links.appendChild(close);
    }
    item.appendChild(links);
    if (o.answer) item.appendChild(answerBlock(o.answer));
    return item;
  }

  function fill(box, status, items, render, empty) {
    box.textContent = "";
    status.textContent = items.length === 0 ? empty : `${items.length} request${items.length === 1 ? "" : "s"}`;
    for (const o of items) box.appendChild(render(o));
  }

  function load() {
    const local = fetch("/api/opinions").then((r) => (r.ok ? r.json() : []));
    const remote = fetch("/api/inbox/opinions")
      .then((r) => (r.ok ? r.json() : { opinions: [], unavailable: [] }));
    return Promise.all([local, remote]).then(([mine, inbox]) => {
      const asked = inbox.opinions.concat(
        mine.filter((o) => o.role === "consultant").map((o) => Object.assign({ peer: "" }, o)));
      fill($("inbox"), $("inbox-status"), asked, inboxItem, "Nothing is asked of you.");
      if (inbox.unavailable.length > 0) {
        $("inbox-status").textContent += " · not reachable now: " +
          inbox.unavailable.map((u) => u.peer).join(", ");
      }
      fill($("mine"), $("mine-status"), mine.filter((o) => o.role === "requester"), mineItem,
        "You have not asked for a second opinion.");
      document.body.dataset.loaded = String(Date.now());
    }).catch((err) => {
      $("inbox-status").textContent = `Could not load (${err.message}).`;
    });
  }

  load();
})();
