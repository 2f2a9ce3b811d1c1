// Chitram's only script of its own: uploads with progress, copy buttons, toasts, and the list of
// uploads this browser made (ids and delete keys stay on this device, never on the server).
// Every page works without it; it only makes them quicker. No inline code: the CSP forbids it.
(function () {
  "use strict";

  const STORE_KEY = "chitram.uploads";
  const STORE_LIMIT = 500;
  const PARALLEL_UPLOADS = 3;

  document.documentElement.classList.add("js");

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // -- toasts ---------------------------------------------------------------------------

  function toast(message, kind) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const item = document.createElement("div");
    item.className = "toast " + (kind || "info");
    const text = document.createElement("span");
    text.textContent = message;
    item.appendChild(text);
    if (kind === "error") {
      // Errors stay until dismissed (people read at their own pace) and interrupt screen readers.
      item.setAttribute("role", "alert");
      const close = document.createElement("button");
      close.type = "button";
      close.className = "small dismiss";
      close.textContent = "Dismiss";
      close.addEventListener("click", function () { item.remove(); });
      item.appendChild(close);
    } else {
      setTimeout(function () { item.remove(); }, 5000);
    }
    box.appendChild(item);
  }

  // Quiet news for screen readers (copied, upload progress) through one visually hidden region.
  function announce(message) {
    const region = document.getElementById("announcer");
    if (!region) return;
    region.textContent = "";
    setTimeout(function () { region.textContent = message; }, 50);
  }

  // The server's problem+json says what went wrong and what to do; show its detail.
  function problemDetail(status, text) {
    try {
      const problem = JSON.parse(text);
      if (problem && typeof problem.detail === "string") return capitalise(problem.detail);
    } catch (ignored) { /* not JSON: a proxy's page, say */ }
    if (status === 413) return "The file is larger than this server accepts; choose a smaller one.";
    if (status === 429) return "Too many requests; wait a minute and try again.";
    if (status === 0) return "Could not reach the server; check your connection and try again.";
    return "The request failed (HTTP " + status + "); try again.";
  }

  function capitalise(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  // htmx reveals an element once; after a failed page fetch, let the next scroll try again.
  function rearm(elt) {
    if (elt && elt.classList && elt.classList.contains("more")) elt.removeAttribute("data-hx-revealed");
  }

  document.addEventListener("htmx:responseError", function (event) {
    const xhr = event.detail.xhr;
    rearm(event.detail.elt);
    toast(problemDetail(xhr.status, xhr.responseText), "error");
  });
  document.addEventListener("htmx:sendError", function (event) {
    rearm(event.detail.elt);
    toast(problemDetail(0, ""), "error");
  });
  document.addEventListener("htmx:configRequest", function (event) {
    // htmx reports the page address; the part after # may hold a delete key and stays here.
    const current = event.detail.headers["HX-Current-URL"];
    if (current) event.detail.headers["HX-Current-URL"] = current.split("#")[0];
  });
  document.addEventListener("chitram:toast", function (event) {
    toast(event.detail.message, "success");
  });

  // -- uploads remembered on this device --------------------------------------------------

  function loadUploads() {
    try {
      const list = JSON.parse(localStorage.getItem(STORE_KEY) || "[]");
      return Array.isArray(list) ? list : [];
    } catch (ignored) {
      return [];
    }
  }

  function saveUploads(list) {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(list.slice(0, STORE_LIMIT)));
    } catch (ignored) { /* storage full or disabled: the delete link is still on screen */ }
  }

  function remember(element) {
    const entry = {
      id: element.dataset.id,
      token: element.dataset.deleteToken,
      pageUrl: element.dataset.pageUrl,
      thumbnailUrl: element.dataset.thumbnailUrl,
      title: element.dataset.title,
      createdAt: element.dataset.createdAt,
    };
    saveUploads([entry].concat(loadUploads().filter(function (e) { return e.id !== entry.id; })));
  }

  function forget(id) {
    saveUploads(loadUploads().filter(function (e) { return e.id !== id; }));
    const card = document.querySelector('#mine-list [data-id="' + CSS.escape(id) + '"]');
    if (card) {
      const hadFocus = card.contains(document.activeElement);
      const next = card.nextElementSibling || card.previousElementSibling;
      card.remove();
      if (hadFocus) {
        const target = next ? next.querySelector("button") : document.getElementById("file");
        if (target) target.focus();
      }
    }
    // The same image's result from this visit still offers its links and key: say it is gone.
    document.querySelectorAll('#upload-list .result[data-id="' + CSS.escape(id) + '"]').forEach(function (result) {
      const row = result.closest("li") || result;
      const note = document.createElement("p");
      note.className = "status";
      note.textContent = (result.dataset.title || "Untitled image") + ": deleted.";
      row.classList.remove("done");
      row.classList.add("upload-row", "deleted");
      row.replaceChildren(note);
    });
    showMine();
  }

  function tokenFor(id) {
    const entry = loadUploads().find(function (e) { return e.id === id; });
    if (entry) return entry.token;
    const match = /^#token=([A-Za-z0-9_-]+)$/.exec(location.hash);
    return match ? match[1] : "";
  }

  // Wire up what the server sent, on load and after every htmx swap.
  function within(root, selector) {
    const found = Array.from(root.querySelectorAll(selector));
    if (root.matches && root.matches(selector)) found.unshift(root);
    return found;
  }

  function scan(root) {
    within(root, "[data-uploaded]").forEach(remember);
    within(root, "[data-deleted-id]").forEach(function (el) { forget(el.dataset.deletedId); });
    within(root, "[data-delete-token-for]").forEach(function (input) {
      if (!input.value) input.value = tokenFor(input.dataset.deleteTokenFor);
    });
    if (location.hash.indexOf("#token=") === 0) {
      // Read once into the form; keep it out of history, bookmarks and later request headers.
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function showMine() {
    const section = document.getElementById("mine-section");
    const list = document.getElementById("mine-list");
    const template = document.getElementById("mine-item");
    if (!section || !list || !template) return;
    const uploads = loadUploads();
    section.hidden = uploads.length === 0;
    const shown = new Set(Array.from(list.children, function (li) { return li.dataset.id; }));
    // Newest first, like after a reload: walk oldest to newest, each new card going on top.
    uploads.slice().reverse().forEach(function (entry) {
      if (shown.has(entry.id)) return;
      const card = template.content.firstElementChild.cloneNode(true);
      card.dataset.id = entry.id;
      card.querySelector("a").href = entry.pageUrl;
      const img = card.querySelector("img");
      img.src = entry.thumbnailUrl;
      img.alt = entry.title || "Untitled image";
      card.querySelector(".card-title").textContent = entry.title || "Untitled image";
      card.querySelector("button").setAttribute("aria-label", "Delete " + (entry.title || "untitled image " + entry.id));
      list.prepend(card);
    });
  }

  async function deleteRemembered(card) {
    const id = card.dataset.id;
    if (!confirm("Delete this image for everyone? This cannot be undone.")) return;
    const body = new URLSearchParams({ delete_token: tokenFor(id) });
    let response;
    try {
      response = await fetch("/i/" + encodeURIComponent(id) + "/delete", {
        method: "POST",
        headers: { "X-CSRFToken": csrfToken(), "HX-Request": "true" },
        body: body,
      });
    } catch (ignored) {
      toast(problemDetail(0, ""), "error");
      return;
    }
    if (response.ok || response.status === 404) {
      forget(id);
      toast(response.ok ? "The image was deleted." : "That image was already gone.", "success");
    } else if (response.status === 403 &&
               confirm("This server no longer accepts the delete key kept for this image. Forget it on this browser?")) {
      forget(id);
    } else {
      toast(problemDetail(response.status, await response.text()), "error");
    }
  }

  // -- copy buttons ---------------------------------------------------------------------

  async function copyField(button) {
    const field = document.getElementById(button.dataset.copy);
    if (!field) return;
    try {
      await navigator.clipboard.writeText(field.value);
    } catch (ignored) {
      field.select();  // no clipboard permission: leave it selected for Ctrl+C
      toast("Press Ctrl+C (⌘C on a Mac) to copy.", "info");
      return;
    }
    if (!button.dataset.label) button.dataset.label = button.textContent;
    announce("Copied " + (button.getAttribute("aria-label") || "").replace(/^Copy /, ""));
    button.textContent = "Copied";
    button.classList.add("copied");
    clearTimeout(button.copiedTimer);
    button.copiedTimer = setTimeout(function () {
      button.textContent = button.dataset.label;
      button.classList.remove("copied");
    }, 2000);
  }

  document.addEventListener("click", function (event) {
    const copy = event.target.closest("[data-copy]");
    if (copy) { copyField(copy); return; }
    const forgetDelete = event.target.closest('[data-action="forget-delete"]');
    if (forgetDelete) deleteRemembered(forgetDelete.closest("[data-id]"));
  });

  // Buttons with data-confirm ask before their form is sent (bulk delete, /admin). Without
  // JavaScript the form is sent as it is, like every other form here.
  document.addEventListener("submit", function (event) {
    const button = event.submitter;
    if (!button || !button.dataset.confirm) return;
    const form = event.target;
    const choices = form.querySelector('input[type="checkbox"]');
    if (choices && !form.querySelector('input[type="checkbox"]:checked')) {
      event.preventDefault();
      toast("Tick the images to delete first.", "error");
      return;
    }
    if (!window.confirm(button.dataset.confirm)) event.preventDefault();
  });

  // -- the uploader -----------------------------------------------------------------------

  function setUpUploader(form) {
    const input = form.querySelector('input[type="file"]');
    const zone = document.getElementById("drop-zone");
    const list = document.getElementById("upload-list");
    const section = document.getElementById("upload-section");
    const maxBytes = Number(form.dataset.maxBytes || 0);
    const queue = [];
    const tally = { total: 0, done: 0, failed: 0 };
    let running = 0;

    input.multiple = true;
    input.required = false;

    // The whole drop zone opens the file chooser, not just the small native button.
    zone.addEventListener("click", function (event) {
      if (!event.target.closest("input, label, button, a")) input.click();
    });
    // Leaving mid-upload would drop the file, or lose its delete key if the server already has it.
    window.addEventListener("beforeunload", function (event) {
      if (running || queue.length) {
        event.preventDefault();
        event.returnValue = "";  // older browsers ask only when this is set
      }
    });  // the script uploads on choice; Enter in Title must not nag for a file

    function enqueue(files, pasted) {
      // Title and visibility are taken now: changing the form later affects only later files.
      const choices = { title: form.elements.title.value, visibility: form.elements.visibility.value };
      form.elements.title.value = "";  // a title names this batch; the next one starts untitled
      Array.from(files).forEach(function (file, index) {
        if (pasted || !file.name) {
          // Pasted screenshots arrive as "image.png" or nameless; give them a name worth keeping.
          const extension = (file.type.split("/")[1] || "png").replace("jpeg", "jpg");
          file = new File([file], "pasted-" + Date.now() + "-" + index + "." + extension, { type: file.type });
        }
        tally.total += 1;
        queue.push({ file: file, choices: choices, row: addRow(file) });
      });
      report();
      pump();
    }

    function report() {
      const pending = tally.total - tally.done - tally.failed;
      let message = tally.done + " of " + tally.total + " uploaded";
      if (tally.failed) message += ", " + tally.failed + " failed";
      if (pending) message += ", " + pending + " in progress";
      announce(message + ".");
    }

    function addRow(file) {
      section.hidden = false;
      const row = document.createElement("li");
      row.className = "upload-row";
      const name = document.createElement("span");
      name.className = "file-name";
      name.textContent = file.name;
      const progress = document.createElement("progress");
      progress.max = 100;
      progress.value = 0;
      progress.setAttribute("aria-label", "Upload progress of " + file.name);
      const status = document.createElement("p");
      status.className = "status";
      status.textContent = "Waiting…";
      row.append(name, progress, status);
      list.prepend(row);
      return row;
    }

    function pump() {
      while (running < PARALLEL_UPLOADS && queue.length) {
        const job = queue.shift();
        running += 1;
        send(job).then(function (ok) {
          tally[ok ? "done" : "failed"] += 1;
          report();
        }).finally(function () { running -= 1; pump(); });
      }
    }

    function fail(row, message) {
      row.classList.add("failed");
      const progress = row.querySelector("progress");
      if (progress) progress.remove();
      row.querySelector(".status").textContent = message;
      return false;
    }

    function succeed(row, html) {
      const template = document.createElement("template");
      template.innerHTML = html;  // our own escaped fragment, as an htmx swap would insert it
      if (!template.content.querySelector("[data-uploaded]")) {
        return fail(row, "The server answered with something other than an upload result; try again.");
      }
      row.classList.add("done");
      row.replaceChildren(template.content);
      scan(row);
      if (window.htmx) window.htmx.process(row);
      showMine();
      return true;
    }

    function send(job) {
      const file = job.file;
      const row = job.row;
      return new Promise(function (resolve) {
        if (maxBytes && file.size > maxBytes) {
          resolve(fail(row, "This file is " + (file.size / 1048576).toFixed(1) + " MiB; the limit is " +
            (maxBytes / 1048576).toFixed(1) + " MiB. Choose a smaller file."));
          return;
        }
        const data = new FormData();
        data.append("_csrf_token", csrfToken());
        data.append("title", job.choices.title);
        data.append("visibility", job.choices.visibility);
        data.append("file", file, file.name);
        const xhr = new XMLHttpRequest();
        const progress = row.querySelector("progress");
        const status = row.querySelector(".status");
        let outcome = false;
        status.textContent = "Uploading…";
        xhr.upload.addEventListener("progress", function (event) {
          if (event.lengthComputable) progress.value = Math.round((event.loaded / event.total) * 100);
        });
        xhr.upload.addEventListener("load", function () {
          progress.removeAttribute("value");  // indeterminate while the server checks the image
          status.textContent = "Processing…";
        });
        xhr.addEventListener("load", function () {
          if (xhr.status >= 200 && xhr.status < 300) {
            outcome = succeed(row, xhr.responseText);
          } else {
            outcome = fail(row, problemDetail(xhr.status, xhr.responseText));
          }
        });
        xhr.addEventListener("error", function () { fail(row, problemDetail(0, "")); });
        xhr.addEventListener("abort", function () { fail(row, "The upload was interrupted; try again."); });
        xhr.addEventListener("timeout", function () { fail(row, "The server took too long to answer; try again."); });
        // Fires after load, error, abort and timeout alike: the queue never stalls on one file.
        xhr.addEventListener("loadend", function () { resolve(outcome); });
        xhr.open("POST", form.action);
        xhr.setRequestHeader("HX-Request", "true");
        xhr.setRequestHeader("X-CSRFToken", csrfToken());
        xhr.send(data);
      });
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (input.files.length) enqueue(input.files);
      input.value = "";
    });
    input.addEventListener("change", function () {
      if (input.files.length) enqueue(input.files);
      input.value = "";
    });

    // Accept drops anywhere, so a near miss does not navigate away to the dropped file.
    document.addEventListener("dragover", function (event) {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    document.addEventListener("dragleave", function (event) {
      if (!event.relatedTarget) zone.classList.remove("dragging");
    });
    document.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("dragging");
      if (event.dataTransfer && event.dataTransfer.files.length) enqueue(event.dataTransfer.files);
    });
    document.addEventListener("paste", function (event) {
      const clipboard = event.clipboardData;
      if (!clipboard || !clipboard.files.length) return;
      // Office apps put a picture of the text beside it: pasting text into a field stays text.
      const editable = event.target.closest && event.target.closest("input, textarea, [contenteditable]");
      if (editable && clipboard.types.indexOf("text/plain") !== -1) return;
      event.preventDefault();
      enqueue(clipboard.files, true);
    });

    // A file chosen before this script ran would otherwise sit there with the button hidden.
    if (input.files.length) {
      enqueue(input.files);
      input.value = "";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    scan(document);
    showMine();
    const form = document.getElementById("upload-form");
    if (form) setUpUploader(form);
  });
  document.addEventListener("htmx:load", function (event) { scan(event.detail.elt); });
})();
