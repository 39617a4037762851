// aqueue dashboard: live updates by short polling, and confirmations. Optional: every
// page is complete without this file (it is rendered on the server).
//
// Every few seconds a visible page fetches its own URL again and swaps in each element
// marked data-live (matched by id). The fetched HTML is the server's escaped rendering,
// parsed by DOMParser into an inert document: nothing in it runs. A region holding the
// focused element is left alone, so a click or a keystroke is never swapped away.
(function () {
  "use strict";
  var body = document.body;
  var interval = parseInt(body.getAttribute("data-live-interval"), 10) || 3000;
  var toggle = document.getElementById("live-toggle");
  var paused = false;
  var timer = null;
  var inFlight = false;

  function setStatus(state) {
    toggle.classList.remove("on", "error");
    if (state) toggle.classList.add(state);
    toggle.textContent = paused ? "Paused" : state === "error" ? "Offline" : "Live";
    toggle.title = paused ? "Live updates paused: click to resume" : "Updating every " + interval / 1000 + " s: click to pause";
  }

  function refresh() {
    if (paused || inFlight || document.visibilityState !== "visible") return schedule();
    inFlight = true;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (region) {
          var next = fresh.getElementById(region.id);
          if (!next || region.contains(document.activeElement)) return;
          region.replaceWith(document.importNode(next, true));
        });
        var stamp = fresh.getElementById("rendered-at");
        var mine = document.getElementById("rendered-at");
        if (stamp && mine) mine.replaceWith(document.importNode(stamp, true));
        setStatus("on");
      })
      .catch(function () { setStatus("error"); })
      .then(function () { inFlight = false; schedule(); });
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, interval);
  }

  if (document.querySelector("[data-live]")) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      setStatus(paused ? "" : "on");
      if (!paused) refresh();
    });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && !paused) refresh();
    });
    setStatus("on");
    schedule();
  }

  // Forms that act on many jobs, or delete one, ask first (without scripts they just post).
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
