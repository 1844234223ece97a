// The openknn console's page script: live parts, log tails, the copy button and "try it".
// Plain fetch polling: every poller waits while the tab is hidden and starts again, at once,
// when it is shown. Fragments come from the server already escaped (Jinja2's autoescape);
// values from JSON go into the page as text only (textContent), never as HTML.
"use strict";

(function () {
  const openknn = (window.openknn = window.openknn || {});
  const pollers = [];
  const MAX_LOG_ROWS = 5000;
  openknn.pollers = pollers;
  openknn.csrf = () => document.querySelector('meta[name="csrf"]').getAttribute("content");

  // poll(every, run): run() now and then every `every` ms while the tab is shown; run()
  // answers false when there is nothing left to follow.
  openknn.poll = function (every, run, startNow) {
    const p = { every, run, timer: null, paused: false, stopped: false, runs: 0 };
    p.tick = async function () {
      p.timer = null;
      if (p.stopped) return;
      if (document.hidden) {
        p.paused = true;
        return;
      }
      p.runs += 1;
      try {
        if ((await run()) === false) {
          p.stopped = true;
          return;
        }
      } catch (err) {
        // the service restarting, a network blip: keep trying at the same pace
      }
      p.timer = setTimeout(p.tick, p.every);
    };
    p.timer = setTimeout(p.tick, startNow ? 0 : every);
    pollers.push(p);
    return p;
  };

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) return;
    for (const p of pollers) {
      if (p.paused && !p.stopped) {
        p.paused = false;
        p.tick();
      }
    }
  });

  // The fragment at `url`; null when what it shows is gone (404: deleted meanwhile).
  async function getText(url) {
    const answer = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    if (answer.status === 404) return null;
    if (!answer.ok) throw new Error(url + ": " + answer.status);
    return answer.text();
  }

  // A live part: the element the server rendered with data-live is replaced by a fresh copy
  // of itself until a copy says data-done.
  function follow(element) {
    let current = element;
    if (current.hasAttribute("data-done")) return;
    openknn.poll(Number(current.dataset.every) || 2000, async function () {
      const html = await getText(current.dataset.live);
      if (html === null) return false;
      const template = document.createElement("template");
      template.innerHTML = html;
      const fresh = template.content.firstElementChild;
      if (!fresh) return true;
      current.replaceWith(fresh);
      current = fresh;
      document.dispatchEvent(new CustomEvent("openknn:updated", { detail: fresh }));
      return !fresh.hasAttribute("data-done");
    });
  }

  // A log tail: the rows after the last one shown, appended; the view stays at the bottom if
  // it was there.
  function tail(body) {
    const box = body.closest(".scroll");
    openknn.poll(Number(body.dataset.every) || 2000, async function () {
      const html = await getText(body.dataset.tail + "&after=" + encodeURIComponent(body.dataset.last));
      if (html === null) return false;
      if (!html.trim()) return true;
      const atEnd = box && box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      body.insertAdjacentHTML("beforeend", html);
      const last = body.lastElementChild;
      if (last && last.dataset.id) body.dataset.last = last.dataset.id;
      while (body.rows.length > MAX_LOG_ROWS) body.deleteRow(0);  // the page stays light
      if (box && atEnd) box.scrollTop = box.scrollHeight;
      return true;
    });
  }

  function copyButtons() {
    for (const button of document.querySelectorAll("[data-copy]")) {
      button.addEventListener("click", async function () {
        const source = document.getElementById(button.dataset.copy);
        const text = source.textContent;
        try {
          await navigator.clipboard.writeText(text);
          button.textContent = "Copied";
        } catch (err) {
          const range = document.createRange();
          range.selectNodeContents(source);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          button.textContent = "Selected: press Ctrl+C";
        }
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      });
    }
  }

  // invoke(url, body, contentType, accept): InvokeEndpoint through the console (the Runtime's
  // own path); the answer's status, content type, body text and time.
  openknn.invoke = async function (url, body, contentType, accept) {
    const answer = await fetch(url, {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "X-Openknn-Csrf": openknn.csrf(), "X-Openknn-Content-Type": contentType,
                 "X-Openknn-Accept": accept, "Content-Type": "application/octet-stream" },
    });
    if (!answer.ok) {
      let message = answer.status + " " + answer.statusText;
      try { message = (await answer.json()).message || message; } catch (err) { /* not JSON */ }
      throw new Error(message);
    }
    return answer.json();
  };

  // JSON indented, but each array of numbers on one line (verbose answers stay readable).
  function pretty(text, contentType) {
    if (contentType.indexOf("json") >= 0 && contentType.indexOf("jsonlines") < 0) {
      try {
        return JSON.stringify(JSON.parse(text), null, 2).replace(
          /\[\s+([-0-9.eE+,\s]*?)\s+\]/g, (all, inner) => "[" + inner.replace(/\s+/g, " ") + "]");
      } catch (err) { return text; }
    }
    return text;
  }

  function tryIt() {
    const form = document.getElementById("try-it");
    if (!form) return;
    const status = document.getElementById("try-it-status");
    const out = document.getElementById("try-it-answer");
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const button = form.querySelector("button");
      const accept = form.elements.accept.value + (form.elements.verbose.checked ? "; verbose=true" : "");
      button.disabled = true;
      status.textContent = "Sending…";
      try {
        const a = await openknn.invoke(form.dataset.url, form.elements.rows.value,
                                       form.elements.content_type.value, accept);
        status.textContent = a.status + " · " + (a.content_type || "no content type") + " · " +
          a.ms.toFixed(1) + " ms" + (a.variant ? " · variant " + a.variant : "");
        status.dataset.status = String(a.status);
        out.textContent = pretty(a.body, a.content_type);
      } catch (err) {
        status.textContent = "Failed: " + err.message;
        out.textContent = "";
      } finally {
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    for (const element of document.querySelectorAll("[data-live]")) follow(element);
    for (const body of document.querySelectorAll("[data-tail]")) tail(body);
    copyButtons();
    tryIt();
  });
})();
