// The dashboard's live updates: poll the page's JSON twin (body's
// data-live) every 2 s, at most one request at a time, none while the tab
// is hidden, and replace each part of the page (data-region) whose HTML
// changed, unless the keyboard focus is in it. Forms with data-confirm ask
// before they submit. No inline script: the Content-Security-Policy
// allows only this file.
(function () {
  "use strict";
  var every = 2000, timer = null, busy = false, failures = 0;
  var url = document.body.getAttribute("data-live");
  var status = document.getElementById("live-status");
  var last = {};

  function setStatus(text, stale) {
    if (!status || status.textContent === text) return;
    status.textContent = text;
    status.classList.toggle("stale", !!stale);
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = null;
    if (!document.hidden && url) timer = setTimeout(poll, ms);
  }

  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        // 404: the page shows a task or group that is gone; its parts
        // still come.
        if (!r.ok && r.status !== 404) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (j) {
        failures = 0;
        var regions = (j && j.regions) || {};
        document.querySelectorAll("[data-region]").forEach(function (el) {
          var name = el.getAttribute("data-region");
          var html = regions[name];
          if (typeof html !== "string" || html === last[name]) return;
          if (el.contains(document.activeElement)) return; // do not pull focus away
          last[name] = html;
          el.innerHTML = html;
        });
        setStatus("live", false);
      })
      .catch(function () {
        failures++;
        setStatus("updates paused: the server did not answer", true);
      })
      .then(function () {
        busy = false;
        schedule(every * Math.min(1 + failures, 15));
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else {
      schedule(0);
    }
  });

  document.addEventListener("submit", function (e) {
    var f = e.target;
    var q = f && f.getAttribute && f.getAttribute("data-confirm");
    if (q && !window.confirm(q)) e.preventDefault();
  });

  document.querySelectorAll("[data-region]").forEach(function (el) {
    last[el.getAttribute("data-region")] = el.innerHTML;
  });
  schedule(every);
})();
