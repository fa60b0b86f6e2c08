// Live dashboard: re-fetch every [data-refresh] element's fragment every 2 s and swap it in;
// a page with [data-reload-every] reloads itself while its job is still active.
(function () {
  "use strict";
  const PERIOD_MS = 2000;

  async function refresh(element) {
    try {
      const response = await fetch(element.dataset.refresh, { credentials: "same-origin" });
      if (response.status === 401) {
        window.location.assign("/");
        return;
      }
      if (response.ok) {
        element.innerHTML = await response.text();
      }
    } catch (error) {
      // The server is restarting or the network blinked: try again next period.
    }
  }

  function start() {
    document.querySelectorAll("[data-refresh]").forEach(function (element) {
      setInterval(function () { refresh(element); }, PERIOD_MS);
    });
    const reload = document.querySelector("[data-reload-every]");
    if (reload) {
      setTimeout(function () { window.location.reload(); }, Number(reload.dataset.reloadEvery));
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
