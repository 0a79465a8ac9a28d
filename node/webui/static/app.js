// Peerlight web UI: the few things HTML and htmx do not do by themselves. No inline script
// anywhere (the Content-Security-Policy forbids it): everything is wired up from here.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

// Every htmx request carries the page's CSRF token.
document.body.addEventListener("htmx:configRequest", (event) => {
  event.detail.headers["X-CSRF-Token"] = csrf;
});

function report(hash, kind, value) {
  // keepalive: the event still leaves when the page is being closed.
  fetch("/events/feedback", {
    method: "POST",
    keepalive: true,
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(value === undefined ? {hash, kind} : {hash, kind, value}),
  }).catch(() => {});
}

// Players report what was seen: opened, finished, skipped (left early), watched (the fraction).
for (const player of document.querySelectorAll("audio[data-hash], video[data-hash]")) {
  const hash = player.dataset.hash;
  let opened = false, finished = false, furthest = 0;
  if (player.dataset.start) {
    player.addEventListener("loadedmetadata", () => { player.currentTime = parseFloat(player.dataset.start); }, {once: true});
  }
  player.addEventListener("play", () => { if (!opened) { opened = true; report(hash, "opened"); } });
  player.addEventListener("timeupdate", () => {
    if (player.duration > 0) furthest = Math.max(furthest, player.currentTime / player.duration);
  });
  player.addEventListener("ended", () => { finished = true; report(hash, "finished"); });
  window.addEventListener("pagehide", () => {
    if (!opened || finished) return;
    const fraction = Math.min(1, Math.max(0, furthest));
    report(hash, "watched", fraction);
    if (fraction < 0.2) report(hash, "skipped");
  });
}

// The status page's live line: server-sent events while the page is open.
const live = document.getElementById("live");
if (live && window.EventSource) {
  const source = new EventSource(live.dataset.source);
  source.onmessage = (message) => {
    const s = JSON.parse(message.data);
    live.textContent = `${s.items} items, ${s.pending} waiting for embeddings` + (s.busy ? " · indexing…" : "") + (s.problems ? ` · ${s.problems} problem files` : "");
  };
}

// Long tasks (a fetch, a pairing offer) follow the daemon's server-sent events until they end.
function follow(box) {
  if (box.dataset.following) return;
  box.dataset.following = "1";
  const state = box.classList.contains("job-state") ? box : (box.querySelector(".job-state") || box.nextElementSibling);
  const source = new EventSource(box.dataset.job);
  source.onmessage = (message) => {
    const job = JSON.parse(message.data);
    const e = job.event || {};
    if (box.tagName === "PROGRESS" && e.size) { box.max = e.size; box.value = e.received; state.textContent = Math.floor(100 * e.received / e.size) + "%"; }
    if (e.code) {
      state.textContent = "Pairing code " + e.code + " (valid 5 minutes): waiting for the other device…";
      const join = box.querySelector(".pair-join");
      if (join) join.textContent = "peerlight devices pair --join " + (e.join || e.code);
    }
    const cancel = (box.closest(".pairing") || box.parentElement).querySelector(".job-cancel");
    if (job.error || job.done) { if (cancel) cancel.remove(); }
    if (job.error) { state.textContent = job.error === "cancelled" ? "Cancelled" : "Failed: " + job.error; source.close(); }
    else if (job.done) {
      if (box.tagName === "PROGRESS") box.value = box.max;
      const r = job.result || {};
      state.textContent = r.path ? "Saved: " + r.path.split("/").pop() : (r.paired ? "Paired with " + (r.paired.name || r.paired.peer_id || "the device") : "Done");
      source.close();
    }
  };
}
document.body.addEventListener("htmx:afterSwap", () => document.querySelectorAll("[data-job]").forEach(follow));
