// fedra dashboard: live updates without a library. The coordinator announces changes over
// server-sent events (/events); on each (coalesced), and every 5 s in any case, the page asks
// its own address again with "X-Fedra-Partial: 1" and swaps in the new <main> content.
(function () {
  "use strict";
  var main = document.getElementById("live");
  if (!main) return;
  var busy = false;
  var again = false;
  function status(text) {
    var s = document.getElementById("live-status");
    if (s) s.textContent = text;
  }
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.pathname + location.search, {
      headers: { "X-Fedra-Partial": "1" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (r) {
      return r.text().then(function (body) {
        if (r.ok) {
          main.innerHTML = body;
          document.body.setAttribute("data-updated", new Date().toISOString());
        } else {
          status("update refused: " + r.status + " " + body);
        }
      });
    }).catch(function (e) {
      status("update failed: " + e);
    }).then(function () {
      busy = false;
      if (again) { again = false; setTimeout(refresh, 200); }
    });
  }
  if (window.EventSource) {
    var events = new EventSource("/events");
    events.addEventListener("change", refresh);
    events.onopen = function () { status("live"); };
    events.onerror = function () { status("reconnecting…"); };
  } else {
    status("polling");
  }
  setInterval(refresh, 5000);
})();
