// earshot's page: upload and watch a transcript grow, review it, export it, live captions, usage.
// Plain ES module, no build step, no third-party code. Every request carries the key from the key field.

const KEY_STORAGE = "earshot.apiKey";
const LIST_PAGE_SIZE = 20;
const $ = (selector) => document.querySelector(selector);

// ---------------------------------------------------------------------------------------------------------
// The key and the requests that carry it

const keyInput = $("#api-key");

function apiKey() {
  return keyInput.value.trim();
}

function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : { ...extra };
}

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The message an error response carries: OpenAI's {"error": {"message"}}, or a plain body.
async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  let code;
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    const error = body.error ?? body;
    message = error.message ?? error.detail ?? error.err_msg ?? message;
    code = error.code ?? error.err_code;
  } catch {
    if (text.trim()) message = text.trim().slice(0, 300);
  }
  return new ApiError(message, response.status, code);
}

async function api(path, options = {}) {
  const sentKey = apiKey();
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  if (!response.ok) {
    const error = await errorFrom(response);
    // An answer to a key the user has since replaced is not worth an alert.
    error.staleKey = sentKey !== apiKey();
    throw error;
  }
  return response;
}

async function apiJson(path, options = {}) {
  const response = await api(path, options);
  return response.status === 204 ? null : response.json();
}

function setupKeyField() {
  keyInput.value = localStorage.getItem(KEY_STORAGE) ?? "";
  const toggle = $("#key-toggle");
  keyInput.addEventListener("change", () => {
    const key = apiKey();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    clearAlerts();
    refreshAll();
  });
  // Enter in the field commits it (a change event); the form itself never submits.
  $("#key-form").addEventListener("submit", (event) => event.preventDefault());
  toggle.addEventListener("click", () => {
    const shown = keyInput.type === "text";
    keyInput.type = shown ? "password" : "text";
    toggle.textContent = shown ? "Show" : "Hide";
  });
  $("#key-forget").addEventListener("click", () => {
    keyInput.value = "";
    localStorage.removeItem(KEY_STORAGE);
    clearAlerts();
    refreshAll();
    keyInput.focus();
  });
}

// ---------------------------------------------------------------------------------------------------------
// Alerts: errors stay visible until dismissed; the same message is shown once.

const alerts = $("#alerts");

function showError(context, error) {
  if (error?.staleKey) return;
  let message = error instanceof Error ? error.message : String(error);
  if (error instanceof ApiError && error.status === 401) {
    message = `${message.replace(/\.$/, "")}. Enter a valid key in the field above.`;
  }
  const text = `${context}: ${message}`;
  if ([...alerts.children].some((alert) => alert.dataset.text === text)) return;
  const alert = document.createElement("div");
  alert.className = "alert";
  alert.dataset.text = text;
  const body = document.createElement("p");
  const title = document.createElement("strong");
  title.textContent = `${context}: `;
  body.append(title, message);
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.className = "secondary small";
  dismiss.textContent = "Dismiss";
  dismiss.setAttribute("aria-label", `Dismiss: ${text}`);
  dismiss.addEventListener("click", () => {
    alert.remove();
    $("#main").focus();
  });
  alert.append(body, dismiss);
  alerts.append(alert);
}

// What the page loads by itself is refused alike without a valid key: one alert says so for all of it.
function showLoadError(context, error) {
  showError(error instanceof ApiError && error.status === 401 ? "API key" : context, error);
}

function clearAlerts() {
  alerts.replaceChildren();
}

// ---------------------------------------------------------------------------------------------------------
// Formatting

function clock(seconds) {
  const total = Math.max(0, seconds || 0);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = Math.floor(total % 60);
  const mm = String(minutes).padStart(hours ? 2 : 1, "0");
  const ss = String(secs).padStart(2, "0");
  return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}

function duration(seconds) {
  if (seconds < 60) return `${(seconds || 0).toFixed(1)} s`;
  return clock(seconds);
}

function dateTime(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

function paragraphText(paragraphs) {
  return paragraphs.map((paragraph) => paragraph.text).join("\n\n");
}

// ---------------------------------------------------------------------------------------------------------
// Models, for the two model pickers

async function loadModels() {
  try {
    const body = await apiJson("/v1/models");
    for (const select of [$("#upload-model"), $("#live-model")]) {
      const chosen = select.value;
      select.replaceChildren(new Option("Server default", ""));
      for (const model of body.data ?? []) select.append(new Option(model.id, model.id));
      select.value = [...select.options].some((option) => option.value === chosen) ? chosen : "";
    }
  } catch (error) {
    showLoadError("Models", error);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Server-Sent Events over fetch: EventSource can't POST a file or send the key.

async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseSseBlock(block);
      if (event) yield event;
    }
  }
  const last = parseSseBlock(buffer);
  if (last) yield last;
}

function parseSseBlock(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // comments are keepalives
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return null;
  const text = data.join("\n");
  try {
    return { name, data: JSON.parse(text) };
  } catch {
    return { name, data: text };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Upload: POST /v1/transcripts, watch the snapshots, end on `done` or `error`

const upload = {
  form: $("#upload-form"),
  file: $("#upload-file"),
  start: $("#upload-start"),
  cancel: $("#upload-cancel"),
  run: $("#upload-run"),
  progress: $("#upload-progress"),
  progressText: $("#upload-progress-text"),
  status: $("#upload-status"),
  live: $("#upload-live"),
  controller: null,
};

function setupUpload() {
  const zone = $("#drop-zone");
  upload.live.dataset.empty = "The text appears here as it is recognised.";
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer?.files?.length) {
      upload.file.files = event.dataTransfer.files;
      upload.form.requestSubmit();
    }
  });
  upload.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = upload.file.files?.[0];
    if (file) transcribe(file);
  });
  upload.cancel.addEventListener("click", () => upload.controller?.abort());
}

// Shows a snapshot, appending only what is new so that screen readers announce the added words.
function renderSnapshot(container, paragraphs) {
  paragraphs.forEach((paragraph, index) => {
    let element = container.children[index];
    if (!element) {
      element = document.createElement("p");
      const time = document.createElement("span");
      time.className = "time";
      time.setAttribute("aria-hidden", "true");
      element.append(time, document.createTextNode(""));
      container.append(element);
    }
    element.firstChild.textContent = clock(paragraph.start);
    const textNode = element.lastChild;
    const shown = textNode.textContent;
    const text = paragraph.text ?? "";
    if (text.startsWith(shown)) {
      if (text.length > shown.length) textNode.appendData(text.slice(shown.length));
    } else {
      textNode.textContent = text;
    }
  });
  while (container.children.length > paragraphs.length) container.lastChild.remove();
  container.scrollTop = container.scrollHeight;
}

function showProgress(current, total) {
  if (!total) {
    upload.progress.removeAttribute("value");
    upload.progressText.textContent = "";
    return;
  }
  const fraction = Math.min(1, Math.max(0, current / total));
  upload.progress.value = fraction;
  upload.progress.setAttribute("aria-valuetext", `${clock(current)} of ${clock(total)} transcribed`);
  upload.progressText.textContent = `${clock(current)} / ${clock(total)} (${Math.round(fraction * 100)}%)`;
}

function setStatus(element, text, tone = "") {
  element.textContent = text;
  element.classList.toggle("ok", tone === "ok");
  element.classList.toggle("bad", tone === "bad");
}

async function transcribe(file) {
  const body = new FormData();
  body.append("file", file, file.name);
  const model = $("#upload-model").value;
  const language = $("#upload-language").value.trim();
  if (model) body.append("model", model);
  if (language) body.append("language", language);
  body.append("stream", "true");

  const controller = new AbortController();
  upload.controller = controller;
  upload.start.disabled = true;
  upload.cancel.disabled = false;
  upload.run.hidden = false;
  upload.live.replaceChildren();
  showProgress(0, 0);
  setStatus(upload.status, `Uploading ${file.name}…`);

  let finished = false;
  try {
    const response = await api("/v1/transcripts", {
      method: "POST",
      body,
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (!(response.headers.get("content-type") ?? "").includes("text/event-stream")) {
      // A server that answered with the document at once.
      finishUpload(await response.json());
      finished = true;
      return;
    }
    for await (const event of sseEvents(response)) {
      if (event.name === "queued") {
        const position = event.data.position;
        setStatus(upload.status, `Waiting for a free slot: position ${position} in the queue`);
      } else if (event.name === "transcription") {
        setStatus(upload.status, "Transcribing…");
        renderSnapshot(upload.live, event.data.paragraphs ?? []);
        showProgress(event.data.current_time, event.data.total_time);
      } else if (event.name === "done") {
        finishUpload(event.data);
        finished = true;
      } else if (event.name === "error") {
        const detail = event.data.detail ?? event.data.message ?? "the transcription failed";
        const code = event.data.code ? ` (${event.data.code})` : "";
        throw new Error(`${detail}${code}`);
      }
    }
    if (!finished) throw new Error("the server closed the stream before the transcript was done");
  } catch (error) {
    if (error.name === "AbortError") {
      setStatus(upload.status, "Cancelled; nothing was stored.", "bad");
    } else {
      setStatus(upload.status, "Failed; nothing was stored.", "bad");
      showError("Transcription", error);
    }
  } finally {
    upload.controller = null;
    upload.start.disabled = false;
    upload.cancel.disabled = true;
  }
}

function finishUpload(document_) {
  renderSnapshot(upload.live, document_.paragraphs ?? []);
  showProgress(document_.duration || 1, document_.duration || 1);
  const cached = document_.cached ? " (already transcribed: taken from the store, not billed again)" : "";
  setStatus(upload.status, `Done: ${duration(document_.duration)} of audio${cached}.`, "ok");
  openReview(document_);
  loadStored();
  loadUsage();
}

// ---------------------------------------------------------------------------------------------------------
// Review: edit the paragraphs, save them as the validated version, download

const review = {
  section: $("#review"),
  meta: $("#review-meta"),
  form: $("#review-form"),
  paragraphs: $("#review-paragraphs"),
  status: $("#review-status"),
  document: null,
};

function openReview(document_, { focus = false } = {}) {
  review.document = document_;
  review.section.hidden = false;
  const validated = document_.validated ? ' <span class="badge">reviewed</span>' : "";
  review.meta.innerHTML = "";
  const name = document.createElement("strong");
  name.textContent = document_.name || document_.id;
  review.meta.append(
    name,
    ` · ${duration(document_.duration)} · ${document_.model ?? ""}${
      document_.language ? ` · ${document_.language}` : ""
    } · ${dateTime(document_.created_at)}`,
  );
  if (validated) review.meta.insertAdjacentHTML("beforeend", validated);
  fillEditor(document_.validated ?? document_.paragraphs ?? []);
  setStatus(review.status, "");
  if (focus) {
    review.section.scrollIntoView({ block: "start" });
    $("#review-heading").setAttribute("tabindex", "-1");
    $("#review-heading").focus();
  }
}

function fillEditor(paragraphs) {
  review.paragraphs.replaceChildren();
  paragraphs.forEach((paragraph, index) => {
    const wrap = document.createElement("div");
    wrap.className = "paragraph";
    const id = `paragraph-${index}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    const speaker = paragraph.speaker_id ? ` · ${paragraph.speaker_id}` : "";
    label.textContent = `Paragraph ${index + 1} · ${clock(paragraph.start)}–${clock(paragraph.end)}${speaker}`;
    const area = document.createElement("textarea");
    area.id = id;
    area.value = paragraph.text;
    area.rows = Math.min(12, Math.max(2, Math.ceil(paragraph.text.length / 70)));
    area.dataset.index = String(index);
    wrap.append(label, area);
    review.paragraphs.append(wrap);
  });
  if (paragraphs.length === 0) {
    const empty = document.createElement("p");
    empty.className = "hint";
    empty.textContent = "No speech was found in this recording.";
    review.paragraphs.append(empty);
  }
  review.editing = paragraphs;
}

function editedParagraphs() {
  return [...review.paragraphs.querySelectorAll("textarea")]
    .map((area) => ({ ...review.editing[Number(area.dataset.index)], text: area.value.trim() }))
    .filter((paragraph) => paragraph.text);
}

function setupReview() {
  review.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const document_ = review.document;
    if (!document_) return;
    const save = $("#review-save");
    save.disabled = true;
    setStatus(review.status, "Saving…");
    try {
      const saved = await apiJson(`/v1/transcripts/${encodeURIComponent(document_.id)}`, {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ validated: editedParagraphs() }),
      });
      review.document = saved ?? { ...document_, validated: editedParagraphs() };
      setStatus(review.status, "Saved. Downloads now use your corrected text.", "ok");
      loadStored();
    } catch (error) {
      setStatus(review.status, `Not saved: ${error.message}`, "bad");
      showError("Saving corrections", error);
    } finally {
      save.disabled = false;
    }
  });
  $("#review-reset").addEventListener("click", () => {
    if (!review.document) return;
    fillEditor(review.document.paragraphs ?? []);
    setStatus(review.status, "Machine text restored; save to keep it.");
  });
  for (const button of document.querySelectorAll(".downloads button")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
}

async function download(format) {
  const document_ = review.document;
  if (!document_) return;
  try {
    const response = await api(`/v1/transcripts/${encodeURIComponent(document_.id)}?format=${format}`);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    const stem = (document_.name || "transcript").replace(/\.[A-Za-z0-9]{1,5}$/, "");
    link.download = `${stem}.${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (error) {
    showError(`Download ${format}`, error);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Stored transcripts

const stored = { list: $("#stored-list"), more: $("#stored-more"), empty: $("#stored-empty"), after: null };

async function loadStored({ append = false } = {}) {
  try {
    const query = new URLSearchParams({ limit: String(LIST_PAGE_SIZE) });
    if (append && stored.after) query.set("after", stored.after);
    const body = await apiJson(`/v1/transcripts?${query}`);
    const documents = body.data ?? [];
    if (!append) stored.list.replaceChildren();
    for (const document_ of documents) stored.list.append(storedItem(document_));
    stored.after = body.last_id ?? documents.at(-1)?.id ?? null;
    stored.more.hidden = !body.has_more;
    stored.empty.hidden = stored.list.children.length > 0;
  } catch (error) {
    showLoadError("Stored transcripts", error);
  }
}

function storedItem(document_) {
  const item = document.createElement("li");
  item.dataset.id = document_.id;
  const text = document.createElement("div");
  text.className = "item-text";
  const name = document.createElement("span");
  name.className = "item-name";
  name.textContent = document_.name || document_.id;
  const meta = document.createElement("span");
  meta.className = "item-meta";
  const reviewed = document_.validated ? " · reviewed" : "";
  meta.textContent = `${duration(document_.duration)} · ${dateTime(document_.created_at)}${reviewed}`;
  text.append(name, meta);

  const actions = document.createElement("div");
  actions.className = "item-actions";
  const open = document.createElement("button");
  open.type = "button";
  open.className = "secondary small";
  open.textContent = "Open";
  open.setAttribute("aria-label", `Open ${name.textContent}`);
  open.addEventListener("click", async () => {
    try {
      openReview(await apiJson(`/v1/transcripts/${encodeURIComponent(document_.id)}`), { focus: true });
    } catch (error) {
      showError("Opening a transcript", error);
    }
  });
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "danger small";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete ${name.textContent}`);
  remove.addEventListener("click", async () => {
    if (!window.confirm(`Delete the transcript "${name.textContent}"? This can't be undone.`)) return;
    try {
      await api(`/v1/transcripts/${encodeURIComponent(document_.id)}`, { method: "DELETE" });
      const next = item.nextElementSibling ?? item.previousElementSibling;
      item.remove();
      stored.empty.hidden = stored.list.children.length > 0;
      if (review.document?.id === document_.id) {
        review.document = null;
        review.section.hidden = true;
      }
      (next?.querySelector("button") ?? $("#stored-refresh")).focus();
    } catch (error) {
      showError("Deleting a transcript", error);
    }
  });
  actions.append(open, remove);
  item.append(text, actions);
  return item;
}

// ---------------------------------------------------------------------------------------------------------
// Usage of the key

async function loadUsage() {
  const summary = $("#usage-summary");
  const table = $("#usage-table");
  try {
    const usage = await apiJson("/v1/usage?group_by=model");
    const rows = usage.data.map((row) => {
      const tr = document.createElement("tr");
      const cells = [
        row.model ?? "(unknown)",
        String(row.requests),
        duration(row.audio_seconds),
        row.cost.toFixed(4),
      ];
      for (const [index, value] of cells.entries()) {
        const cell = document.createElement(index === 0 ? "th" : "td");
        if (index === 0) cell.scope = "row";
        cell.textContent = value;
        tr.append(cell);
      }
      return tr;
    });
    table.tBodies[0].replaceChildren(...rows);
    table.hidden = rows.length === 0;
    const who = usage.key ? `Key “${usage.key.name || usage.key.id}”` : "Anonymous use";
    const credits =
      usage.key && usage.key.credits_seconds != null
        ? ` Credit left: ${duration(usage.key.credits_seconds)}.`
        : "";
    summary.textContent =
      `${who}, last 30 days: ${usage.total.requests} ${usage.total.requests === 1 ? "request" : "requests"}, ` +
      `${duration(usage.total.audio_seconds)} of audio.${credits}`;
  } catch (error) {
    summary.textContent = "";
    table.hidden = true;
    showLoadError("Usage", error);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Live captions: the microphone over WS /v1/realtime?intent=transcription

const live = {
  start: $("#live-start"),
  stop: $("#live-stop"),
  status: $("#live-status"),
  captions: $("#captions"),
  socket: null,
  stream: null,
  context: null,
  lines: new Map(),
  stopping: false,
  reported: false, // the server sent an error event: its close needs no alert of its own
};

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let offset = 0; offset < bytes.length; offset += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(offset, offset + 0x8000));
  }
  return btoa(binary);
}

function captionLine(itemId) {
  let line = live.lines.get(itemId);
  if (!line) {
    line = document.createElement("p");
    line.className = "partial";
    live.lines.set(itemId, line);
    live.captions.append(line);
  }
  return line;
}

function onLiveEvent(message) {
  let event;
  try {
    event = JSON.parse(message.data);
  } catch {
    return;
  }
  switch (event.type) {
    case "session.created":
    case "transcription_session.created":
      sendSessionUpdate();
      break;
    case "session.updated":
    case "transcription_session.updated":
      setStatus(live.status, "Listening");
      break;
    case "input_audio_buffer.speech_started":
      setStatus(live.status, "Hearing speech…");
      break;
    case "input_audio_buffer.speech_stopped":
      setStatus(live.status, "Listening");
      break;
    case "conversation.item.input_audio_transcription.delta":
      captionLine(event.item_id).append(event.delta);
      live.captions.scrollTop = live.captions.scrollHeight;
      break;
    case "conversation.item.input_audio_transcription.completed": {
      const line = captionLine(event.item_id);
      line.className = "final";
      line.textContent = event.transcript;
      if (!event.transcript.trim()) {
        line.remove();
        live.lines.delete(event.item_id);
      }
      live.captions.scrollTop = live.captions.scrollHeight;
      break;
    }
    case "conversation.item.input_audio_transcription.failed":
      showError("Live captions", event.error?.message ?? "a turn could not be transcribed");
      break;
    case "error":
      live.reported = true;
      showError("Live captions", event.error?.message ?? "the server reported an error");
      break;
    default:
      break;
  }
}

function sendSessionUpdate() {
  const model = $("#live-model").value;
  const input = {
    format: { type: "audio/pcm", rate: 24000 },
    turn_detection: { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 },
  };
  if (model) input.transcription = { model };
  live.socket.send(JSON.stringify({ type: "session.update", session: { type: "transcription", audio: { input } } }));
}

async function startCaptions() {
  if (live.socket) return;
  if (!navigator.mediaDevices?.getUserMedia || !window.AudioWorkletNode) {
    showError("Live captions", "this browser can't capture the microphone here (it needs HTTPS or localhost)");
    return;
  }
  live.start.disabled = true;
  live.stopping = false;
  live.reported = false;
  setStatus(live.status, "Asking for the microphone…");
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    live.start.disabled = false;
    setStatus(live.status, "Not listening");
    showError("Microphone", error.message || error.name);
    return;
  }

  const key = apiKey();
  const protocols = key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"];
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ intent: "transcription" });
  const model = $("#live-model").value;
  if (model) query.set("model", model);
  let socket;
  try {
    socket = new WebSocket(`${scheme}//${location.host}/v1/realtime?${query}`, protocols);
  } catch (error) {
    stopCaptions();
    showError("Live captions", `the key can't be sent as a WebSocket subprotocol (${error.message})`);
    return;
  }
  live.socket = socket;
  live.stop.disabled = false;
  setStatus(live.status, "Connecting…");
  socket.addEventListener("message", onLiveEvent);
  socket.addEventListener("close", (event) => {
    if (live.socket !== socket) return; // a session the user already stopped
    if (!live.stopping && !live.reported) {
      const reason = event.reason ? `: ${event.reason}` : "";
      showError("Live captions", `the connection closed (code ${event.code}${reason})`);
    }
    stopCaptions();
  });
  socket.addEventListener("open", async () => {
    try {
      await startAudio(socket);
    } catch (error) {
      if (live.socket !== socket) return; // stopped (or refused) while the audio was starting
      showError("Live captions", error.message || String(error));
      stopCaptions();
    }
  });
}

async function startAudio(socket) {
  const context = new AudioContext();
  live.context = context;
  await context.audioWorklet.addModule("/web/capture-worklet.js");
  if (live.socket !== socket) {
    context.close().catch(() => {});
    return;
  }
  const source = context.createMediaStreamSource(live.stream);
  const capture = new AudioWorkletNode(context, "pcm16-capture", { numberOfInputs: 1, numberOfOutputs: 0 });
  capture.port.onmessage = ({ data }) => {
    if (live.socket?.readyState === WebSocket.OPEN) {
      live.socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(data) }));
    }
  };
  source.connect(capture);
  if (context.state === "suspended") await context.resume();
}

function stopCaptions() {
  live.stopping = true;
  live.stream?.getTracks().forEach((track) => track.stop());
  live.stream = null;
  live.context?.close().catch(() => {});
  live.context = null;
  if (live.socket && live.socket.readyState <= WebSocket.OPEN) live.socket.close(1000, "client stopped");
  live.socket = null;
  for (const line of live.captions.querySelectorAll("p.partial")) line.className = "final";
  live.lines.clear();
  live.start.disabled = false;
  live.stop.disabled = true;
  setStatus(live.status, "Not listening");
}

function setupCaptions() {
  live.captions.dataset.empty = "Press Start captions and speak.";
  live.start.addEventListener("click", startCaptions);
  live.stop.addEventListener("click", () => {
    stopCaptions();
    live.start.focus();
  });
}

// ---------------------------------------------------------------------------------------------------------

function refreshAll() {
  loadModels();
  loadStored();
  loadUsage();
}

setupKeyField();
setupUpload();
setupReview();
setupCaptions();
$("#stored-refresh").addEventListener("click", () => loadStored());
stored.more.addEventListener("click", () => loadStored({ append: true }));
$("#usage-refresh").addEventListener("click", loadUsage);
refreshAll();
