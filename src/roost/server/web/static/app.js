// Live dashboard, no third-party code:
// - every [data-refresh] element re-fetches its fragment (the URL in the attribute) every 2 s
//   and swaps it in when it changed; it stops once the fragment holds [data-final] (an ended
//   job), pauses while the tab is hidden, and goes to the login page when the session ended;
// - forms marked [data-async] (Back up now) post in the background: the answer shows in
//   #flash and the fragments refresh at once, without a page load (plain forms still work
//   without JavaScript).
(function () {
  "use strict";
  const PERIOD_MS = 2000;
  const refreshers = [];

  function makeRefresher(element) {
    let timer = null;
    let busy = false;
    let again = false; // asked to run while a fetch was in flight: run once more after it
    let last = null;

    async function run() {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      again = false;
      clearTimeout(timer);
      try {
        const response = await fetch(element.dataset.refresh, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
          cache: "no-store",
        });
        if (response.status === 401) {
          window.location.assign("/");
          return;
        }
        if (response.ok) {
          const html = await response.text();
          if (html !== last) {
            last = html;
            element.innerHTML = html;
          }
        }
      } catch (error) {
        // The server is restarting or the network blinked: try again next period.
      } finally {
        busy = false;
      }
      if (again) run(); else schedule();
    }

    function schedule() {
      clearTimeout(timer);
      if (!element.querySelector("[data-final]")) {
        timer = setTimeout(function () {
          if (document.hidden) schedule(); else run();
        }, PERIOD_MS);
      }
    }

    return { run: run, schedule: schedule };
  }

  function showFlash(message, level) {
    const area = document.getElementById("flash");
    if (!area) return;
    const line = document.createElement("p");
    line.className = "alert alert-" + (level === "error" ? "error" : "info");
    line.setAttribute("role", "status");
    line.textContent = message;
    area.replaceChildren(line);
  }

  async function submitInBackground(event) {
    const form = event.target.closest("form[data-async]");
    if (!form) return;
    event.preventDefault();
    const button = form.querySelector("button");
    if (button) button.disabled = true;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        body: new FormData(form),
      });
      if (response.status === 401) {
        window.location.assign("/");
        return;
      }
      const answer = await response.json();
      showFlash(answer.message, answer.level);
    } catch (error) {
      showFlash("The server did not answer; try again.", "error");
    } finally {
      if (button) button.disabled = false;
    }
    refreshers.forEach(function (refresher) { refresher.run(); });
  }

  function start() {
    // A flash message came with the URL (a form post without JavaScript): show it once.
    const url = new URL(window.location.href);
    if (url.searchParams.has("flash")) {
      url.searchParams.delete("flash");
      url.searchParams.delete("level");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    document.querySelectorAll("[data-refresh]").forEach(function (element) {
      const refresher = makeRefresher(element);
      refreshers.push(refresher);
      refresher.schedule();
    });
    document.addEventListener("submit", submitInBackground);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
