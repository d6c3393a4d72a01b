// The album page: uploads (picker and drag and drop, one request per photo with a progress
// bar) and live tiles fed by the /ws/updates/ websocket. Plain DOM, no build step.
(function () {
  "use strict";

  const form = document.getElementById("upload-form");
  const grid = document.getElementById("photo-grid");
  const uploads = document.getElementById("uploads");
  const emptyNote = document.getElementById("empty-grid");
  if (!form || !grid) return;

  // Deleting or dismissing a photo asks first: its form carries the question in data-confirm.
  grid.addEventListener("submit", (e) => {
    const question = e.target.dataset ? e.target.dataset.confirm : "";
    if (question && !window.confirm(question)) e.preventDefault();
  });

  const input = document.getElementById("photo-input");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const maxMb = Number(form.dataset.maxMb || "40");
  const statusUrl = form.dataset.statusUrl;
  const ZERO_ID = "00000000-0000-0000-0000-000000000000";
  const deleteUrl = grid.dataset.deleteUrl; // with ZERO_ID where the photo's id goes
  const retryUrl = grid.dataset.retryUrl;
  const LABELS = {queued: "Queued", detecting: "Finding faces", anonymizing: "Anonymizing", done: "Done", failed: "Failed"};
  const RANK = {queued: 0, detecting: 1, anonymizing: 2, done: 3, failed: 3};
  const PARALLEL_UPLOADS = 3;
  const BACKLOG_RETRY_MS = 5000;
  const pending = {}; // photo id → newest status seen before its tile exists

  // ---- tiles -------------------------------------------------------------------------
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function tileFor(id) {
    return grid.querySelector('[data-photo-id="' + CSS.escape(id) + '"]');
  }

  function newTile(data) {
    const tile = el("li", {"class": "tile", "data-photo-id": data.photo_id, "data-status": data.status});
    const image = el("div", {"class": "tile-image"});
    image.appendChild(el("div", {"class": "placeholder", "aria-hidden": "true"}));
    const meta = el("div", {"class": "tile-meta"});
    if (data.file_name) meta.appendChild(el("p", {"class": "tile-name", title: data.file_name}, data.file_name));
    meta.appendChild(el("span", {"class": "badge badge-" + data.status}, LABELS[data.status] || data.status));
    meta.appendChild(el("progress", {max: "1", value: String(data.progress || 0)}));
    meta.appendChild(el("p", {"class": "tile-message"}, data.message || ""));
    tile.append(image, meta);
    grid.prepend(tile);
    if (emptyNote) emptyNote.hidden = true;
    const counted = document.getElementById("quota-photos");
    if (counted) counted.textContent = String(Number(counted.textContent) + 1);
    return tile;
  }

  function applyStatus(data) {
    if (!data || !data.photo_id) return;
    const tile = tileFor(data.photo_id);
    if (!tile) {
      pending[data.photo_id] = data;
      return;
    }
    const current = tile.dataset.status;
    const retried = current === "failed" && data.status === "queued";
    if (!retried && RANK[data.status] < RANK[current]) return; // a late message from an earlier stage
    tile.dataset.status = data.status;
    const badge = tile.querySelector(".badge");
    badge.className = "badge badge-" + data.status;
    badge.textContent = LABELS[data.status] || data.status;
    const bar = tile.querySelector("progress");
    bar.value = data.progress || 0;
    bar.hidden = data.status === "done" || data.status === "failed";
    tile.querySelector(".tile-message").textContent = data.message || "";
    addControls(tile, data);
    if (data.thumbnail_url && !tile.querySelector("img")) {
      const box = tile.querySelector(".tile-image");
      // the image and its thumbnail share a file version (?v=), so only the path differs
      const link = el("a", {href: data.thumbnail_url.replace(/thumbnail\/(?=\?|$)/, "image/"), target: "_blank", rel: "noopener"});
      link.appendChild(el("img", {src: data.thumbnail_url, alt: "Anonymized photo"}));
      box.replaceChildren(link);
    }
  }

  // A finished tile gets what a reloaded one has: Delete (Dismiss when failed), Try again.
  function postForm(url, label, question) {
    const action = el("form", {method: "post", action: url});
    if (question) action.dataset.confirm = question;
    action.appendChild(el("input", {type: "hidden", name: "csrfmiddlewaretoken", value: csrf}));
    action.appendChild(el("button", {type: "submit", "class": question ? "link danger" : "link"}, label));
    return action;
  }

  function addControls(tile, data) {
    if (data.status !== "done" && data.status !== "failed") return;
    tile.querySelectorAll(".tile-meta form").forEach((f) => f.remove());
    const meta = tile.querySelector(".tile-meta");
    const url = (pattern) => pattern.replace(ZERO_ID, data.photo_id);
    if (data.status === "failed" && data.retryable) meta.appendChild(postForm(url(retryUrl), "Try again"));
    const failed = data.status === "failed";
    if (failed && !data.retryable) meta.appendChild(reuploadButton());
    meta.appendChild(postForm(url(deleteUrl), failed ? "Dismiss" : "Delete",
      failed ? "Remove this failed upload?" : "Delete this photo for good? Its real faces go with it."));
  }

  // A failed upload that cannot be tried again (its original is gone) offers "Upload again…": the
  // chosen file goes up like any other, and once it is taken the failed tile is dismissed.
  function reuploadButton() {
    return el("button", {type: "button", "class": "link", "data-reupload": ""}, "Upload again…");
  }

  const reuploadInput = el("input", {type: "file", accept: input.accept, hidden: ""});
  document.body.appendChild(reuploadInput);
  let replacing = null;
  grid.addEventListener("click", (e) => {
    const button = e.target.closest("[data-reupload]");
    if (!button) return;
    replacing = button.closest(".tile").dataset.photoId;
    reuploadInput.click();
  });
  reuploadInput.addEventListener("change", () => {
    if (reuploadInput.files.length) enqueue([reuploadInput.files[0]], replacing);
    reuploadInput.value = "";
    replacing = null;
  });

  function dismiss(photoId) {
    fetch(deleteUrl.replace(ZERO_ID, photoId), {
      method: "POST", credentials: "same-origin", headers: {"X-CSRFToken": csrf, Accept: "application/json"},
    }).then((r) => {
      const tile = tileFor(photoId);
      if (r.ok && tile) tile.remove();
    }).catch(() => {});
  }

  function addPhoto(data) {
    if (!tileFor(data.photo_id)) newTile(data);
    applyStatus(data);
    if (pending[data.photo_id]) {
      applyStatus(pending[data.photo_id]);
      delete pending[data.photo_id];
    }
  }

  // ---- uploads -----------------------------------------------------------------------
  const queue = [];
  let running = 0;

  function uploadRow(file) {
    const row = el("li", {"class": "upload"});
    row.appendChild(el("span", {"class": "upload-name"}, file.name));
    const bar = el("progress", {max: "1", value: "0"});
    row.appendChild(bar);
    const note = el("span", {"class": "upload-note muted"}, "waiting…");
    row.appendChild(note);
    uploads.appendChild(row);
    return {row, bar, note};
  }

  function failUpload(ui, text) {
    ui.row.classList.add("error");
    ui.bar.hidden = true;
    ui.note.className = "upload-note error";
    ui.note.textContent = text;
    const dismiss = el("button", {type: "button", "class": "link", "aria-label": "Dismiss"}, "×");
    dismiss.addEventListener("click", () => ui.row.remove());
    ui.row.appendChild(dismiss);
  }

  function errorText(xhr) {
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && body.error) return body.error;
    } catch (e) { /* not JSON */ }
    if (xhr.status === 413) return "This photo is too large: Veil accepts photos up to " + maxMb + " MB.";
    if (xhr.status === 0) return "The connection was lost; please try again.";
    if (xhr.status === 403 || xhr.status === 302) return "Your session has ended; please log in again.";
    return "The upload failed (" + xhr.status + "); please try again.";
  }

  function sendFile(file, ui, replaces) {
    running += 1;
    ui.note.textContent = "uploading…";
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) ui.bar.value = e.loaded / e.total;
    });
    xhr.addEventListener("loadend", () => {
      running -= 1;
      if (xhr.status === 201) {
        JSON.parse(xhr.responseText).photos.forEach(addPhoto);
        ui.row.remove();
        if (replaces) dismiss(replaces);
      } else if (xhr.status === 429) {
        // earlier photos are still waiting for a worker: send this one again in a little while
        ui.note.textContent = "waiting for earlier photos…";
        ui.bar.value = 0;
        setTimeout(() => { queue.unshift([file, ui, replaces]); pump(); }, BACKLOG_RETRY_MS);
      } else {
        failUpload(ui, errorText(xhr));
      }
      pump();
    });
    const body = new FormData();
    body.append("photos", file, file.name);
    xhr.send(body);
  }

  function pump() {
    while (running < PARALLEL_UPLOADS && queue.length) {
      const [file, ui, replaces] = queue.shift();
      sendFile(file, ui, replaces);
    }
  }

  function enqueue(files, replaces) {
    Array.from(files).forEach((file) => {
      const ui = uploadRow(file);
      if (file.size > maxMb * 1024 * 1024) {
        failUpload(ui, "This photo is too large: Veil accepts photos up to " + maxMb + " MB.");
        return;
      }
      queue.push([file, ui, replaces]);
    });
    pump();
  }

  input.addEventListener("change", () => {
    enqueue(input.files);
    input.value = "";
  });
  ["dragenter", "dragover"].forEach((type) => form.addEventListener(type, (e) => {
    e.preventDefault();
    form.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => form.addEventListener(type, (e) => {
    e.preventDefault();
    form.classList.remove("dragging");
  }));
  form.addEventListener("drop", (e) => {
    if (e.dataTransfer && e.dataTransfer.files.length) enqueue(e.dataTransfer.files);
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    enqueue(input.files);
  });

  // ---- live updates ------------------------------------------------------------------
  let retryDelay = 500;

  function refreshUnfinished() {
    const ids = Array.from(grid.querySelectorAll(".tile"))
      .filter((t) => t.dataset.status !== "done" && t.dataset.status !== "failed")
      .map((t) => t.dataset.photoId);
    if (!ids.length) return;
    fetch(statusUrl + "?ids=" + ids.join(","), {headers: {Accept: "application/json"}, credentials: "same-origin"})
      .then((r) => (r.ok ? r.json() : {photos: []}))
      .then((body) => body.photos.forEach(applyStatus))
      .catch(() => {});
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/updates/");
    socket.addEventListener("open", () => {
      retryDelay = 500;
      document.body.dataset.live = "on";
      refreshUnfinished(); // catch up on anything sent while we were not listening
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "photo.status") applyStatus(message.data);
    });
    socket.addEventListener("close", (event) => {
      document.body.dataset.live = "off";
      if (event.code === 4401) return; // logged out: a reload will show the login page
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 15000);
    });
  }

  connect();
})();
