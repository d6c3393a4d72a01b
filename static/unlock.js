// "Show real faces" and the lightbox, on the owner's album page and on the share page.
//
// The unlock goes over a websocket (data-socket on #unlock): the page sends the chosen name
// and password once; the server answers with text frames (started, refused, failed, finished)
// and one binary frame per recovered photo (u32 header length, JSON header, image bytes).
// Each recovered photo becomes a blob: URL that lives in this page's memory only; it is never
// fetched from a server address, so nothing can cache it, and a reload shows the anonymized
// album again. Plain DOM, no build step.
(function () {
  "use strict";

  const root = document.getElementById("unlock");
  const grid = document.getElementById("photo-grid");
  if (!root || !grid) return;

  const dialog = document.getElementById("unlock-dialog");
  const form = document.getElementById("unlock-form");
  const nameSelect = document.getElementById("unlock-name");
  const password = document.getElementById("unlock-password");
  const errorBox = document.getElementById("unlock-error");
  const submit = document.getElementById("unlock-submit");
  const openButton = document.getElementById("unlock-open");
  const hideButton = document.getElementById("unlock-hide");
  const status = document.getElementById("unlock-status");

  const real = {}; // photo id → blob: URL of its recovered image
  let socket = null;
  let socketReady = null; // resolves to the open socket
  let session = null;
  let expected = 0;
  let received = 0;

  // ---- the websocket ---------------------------------------------------------------------
  function openSocket() {
    if (socket && socket.readyState <= WebSocket.OPEN) return socketReady;
    socketReady = new Promise((resolve, reject) => {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const ws = new WebSocket(scheme + location.host + root.dataset.socket);
      ws.binaryType = "arraybuffer";
      ws.addEventListener("open", () => resolve(ws), {once: true});
      ws.addEventListener("message", onMessage);
      ws.addEventListener("close", (event) => {
        if (socket === ws) socket = null;
        reject(new Error("closed"));
        if (session && received < expected) {
          setStatus("The connection was lost; " + (expected - received) + " photo(s) were not recovered.", true);
        }
        if (event.code === 4404 && !session) showError("This page no longer works: the album or its link has changed. Ask the album's owner.");
        session = null;
        submit.disabled = false;
      });
      socket = ws;
    });
    return socketReady;
  }

  function onMessage(event) {
    if (typeof event.data !== "string") {
      showRecovered(event.data);
      return;
    }
    const message = JSON.parse(event.data);
    const data = message.data || {};
    if (message.type === "unlock.refused") {
      submit.disabled = false;
      if (!dialog.open) dialog.showModal();
      showError(data.message);
      password.value = "";  // ready for the next try
      password.focus();
      setStatus("", false);
      if (data.code === "link_gone") {
        submit.disabled = true;
        setStatus(data.message, true);
      }
    } else if (message.type === "unlock.started") {
      session = data.session;
      expected = data.photos.length;
      received = 0;
      password.value = "";
      submit.disabled = false;
      dialog.close();
      data.photos.forEach((id) => {
        const tile = tileFor(id);
        if (tile) tile.classList.add("recovering");
      });
      progress();
      if (data.workers === 0 && expected) {
        setStatus("No worker is running just now: the real faces come as soon as one starts.", true);
      }
    } else if (message.type === "unlock.failed" && data.session === session) {
      received += 1;
      const tile = tileFor(data.photo_id);
      if (tile) {
        tile.classList.remove("recovering");
        tile.title = data.message;
        tile.classList.add("unlock-failed");
      }
      progress();
    } else if (message.type === "unlock.finished" && data.session === session) {
      const failed = data.failed ? " " + data.failed + " could not be recovered (hover over them for why)." : "";
      setStatus("Real faces shown on " + data.recovered + " photo" + (data.recovered === 1 ? "" : "s") +
                ", for this page only: a reload hides them." + failed, Boolean(data.failed));
      hideButton.hidden = false;
      openButton.hidden = true; // one of "Show" and "Hide real faces" at a time
    }
  }

  function showRecovered(buffer) {
    const view = new DataView(buffer);
    const length = view.getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    const data = header.data || {};
    if (header.type !== "unlock.photo" || data.session !== session) return;
    const blob = new Blob([new Uint8Array(buffer, 4 + length)], {type: data.content_type});
    const tile = tileFor(data.photo_id);
    received += 1;
    progress();
    if (!tile) return;
    if (real[data.photo_id]) URL.revokeObjectURL(real[data.photo_id]);
    const url = URL.createObjectURL(blob);
    real[data.photo_id] = url;
    const img = tile.querySelector("img");
    if (img) {
      if (!img.dataset.anonymizedSrc) img.dataset.anonymizedSrc = img.src;
      img.src = url;
      img.alt = "Photo with its real faces";
    }
    tile.classList.remove("recovering", "unlock-failed");
    tile.classList.add("real");
    if (!tile.querySelector(".real-badge")) {
      const badge = document.createElement("span");
      badge.className = "real-badge";
      badge.textContent = "Real faces";
      tile.querySelector(".tile-image").appendChild(badge);
    }
    if (lightbox.open && lightboxId === data.photo_id) showInLightbox(data.photo_id);
  }

  function progress() {
    if (received < expected) setStatus("Recovering real faces: " + received + " of " + expected + "…", false);
    else if (!expected) setStatus("There are no faces to recover in this album yet.", false);
  }

  // ---- the dialog --------------------------------------------------------------------------
  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function setStatus(text, bad) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(bad));
  }

  openButton.addEventListener("click", () => {
    showError("");
    dialog.showModal();
    password.focus();
  });
  document.getElementById("unlock-cancel").addEventListener("click", () => dialog.close());

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!nameSelect.value) {
      showError("Choose your name.");
      nameSelect.focus();
      return;
    }
    if (!password.value) {
      showError("Type your password.");
      return;
    }
    showError("");
    submit.disabled = true;
    setStatus("Checking your password…", false);
    // the photos in view come back first; scrolling later moves the ones then in view ahead (look)
    const request = {type: "unlock", data: {slot: Number(nameSelect.value), password: password.value, first: inView()}};
    openSocket().then((ws) => ws.send(JSON.stringify(request))).catch(() => {
      submit.disabled = false;
      showError("Veil cannot be reached right now; please try again in a moment.");
    });
  });

  hideButton.addEventListener("click", () => {
    if (socket) {
      socket.send(JSON.stringify({type: "lock"}));
      socket.close();
    }
    session = null;
    Object.keys(real).forEach((id) => {
      URL.revokeObjectURL(real[id]);
      delete real[id];
      const tile = tileFor(id);
      if (!tile) return;
      const img = tile.querySelector("img");
      if (img && img.dataset.anonymizedSrc) {
        img.src = img.dataset.anonymizedSrc;
        img.alt = "Anonymized photo";
      }
      tile.classList.remove("real");
      const badge = tile.querySelector(".real-badge");
      if (badge) badge.remove();
    });
    grid.querySelectorAll(".recovering, .unlock-failed").forEach((t) => t.classList.remove("recovering", "unlock-failed"));
    hideButton.hidden = true;
    openButton.hidden = false;
    setStatus("", false);
    if (lightbox.open) showInLightbox(lightboxId);
  });

  // ---- photos in view first ----------------------------------------------------------------
  const LOOK_EVERY_MS = 2500; // the server takes at most a look message a second or so
  let lookTimer = null;

  function inView() {
    const height = window.innerHeight || document.documentElement.clientHeight;
    return Array.from(grid.querySelectorAll(".tile")).filter((tile) => {
      const box = tile.getBoundingClientRect();
      return box.bottom > 0 && box.top < height && !real[tile.dataset.photoId];
    }).map((tile) => tile.dataset.photoId).slice(0, 100);
  }

  window.addEventListener("scroll", () => {
    if (!session || received >= expected || lookTimer) return;
    lookTimer = setTimeout(() => {
      lookTimer = null;
      const photos = inView();
      if (session && socket && socket.readyState === WebSocket.OPEN && photos.length) {
        socket.send(JSON.stringify({type: "look", data: {photos: photos}}));
      }
    }, LOOK_EVERY_MS);
  }, {passive: true});

  // ---- the lightbox ------------------------------------------------------------------------
  const lightbox = document.getElementById("lightbox");
  const lightboxImage = document.getElementById("lightbox-image");
  const lightboxReal = document.getElementById("lightbox-real");
  const lightboxDownload = document.getElementById("lightbox-download");
  let lightboxId = null;

  function tileFor(id) {
    return grid.querySelector('.tile[data-photo-id="' + CSS.escape(id) + '"]');
  }

  function viewableTiles() {
    return Array.from(grid.querySelectorAll(".tile")).filter((t) => t.querySelector(".tile-image a"));
  }

  function showInLightbox(id) {
    const tile = tileFor(id);
    const link = tile && tile.querySelector(".tile-image a");
    if (!link) return;
    lightboxId = id;
    lightboxImage.src = real[id] || link.href;
    lightboxImage.alt = real[id] ? "Photo with its real faces" : "Anonymized photo";
    lightboxReal.hidden = !real[id];
    lightboxDownload.href = tile.dataset.downloadUrl || link.href.replace(/image\/$/, "download/");
    if (!lightbox.open) lightbox.showModal();
  }

  function step(delta) {
    const tiles = viewableTiles();
    const index = tiles.findIndex((t) => t.dataset.photoId === lightboxId);
    if (index < 0 || !tiles.length) return;
    showInLightbox(tiles[(index + delta + tiles.length) % tiles.length].dataset.photoId);
  }

  grid.addEventListener("click", (event) => {
    const link = event.target.closest(".tile-image a");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    showInLightbox(link.closest(".tile").dataset.photoId);
  });
  document.getElementById("lightbox-prev").addEventListener("click", () => step(-1));
  document.getElementById("lightbox-next").addEventListener("click", () => step(1));
  document.getElementById("lightbox-close").addEventListener("click", () => lightbox.close());
  lightbox.addEventListener("click", (event) => {
    if (event.target === lightbox) lightbox.close(); // a click on the backdrop
  });
  lightbox.addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") step(-1);
    if (event.key === "ArrowRight") step(1);
  });
  lightbox.addEventListener("close", () => {
    lightboxImage.removeAttribute("src");
    lightboxId = null;
  });
})();
