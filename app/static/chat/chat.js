"use strict";
// The chat page: the user's conversations (threads) in a sidebar, newest first; the open one's id
// is kept in localStorage. A reply is streamed when the server streams runs; otherwise the page
// asks again without `stream` and shows the reply when the run has ended.

const API = "/api/openai";
const STORED = { thread: "chat.thread", token: "chat.token", type: "chat.assistantType" };

const SENTENCES = {
  busy: "The assistant is still answering an earlier message in this conversation. Wait for that reply, then send yours again.",
  timeout: "The assistant took too long to answer, so the reply was stopped. Please try again.",
  unavailable: "The assistant is not available right now. Please try again in a moment.",
  unauthorized: "This server needs a valid access token. Enter it above, then try again.",
  tooMany: "You are sending messages faster than this server allows. Wait a moment, then try again.",
  gone: "The earlier conversation no longer exists on the server. A new one starts with your next message.",
  failed: "The assistant could not finish its reply. Please try again.",
  tool: "The assistant tried to use a tool this service does not offer, so it could not answer.",
  // A streamed run cancelled at the server's deadline ends like any cancelled run.
  stopped: "The reply was stopped before it was finished: it was cancelled, or took too long. Please try again.",
  expired: "The reply took too long and expired. Please try again.",
  unconfirmed: "The server could not confirm that the assistant started. The reply may still come: reload the page in a minute to see it.",
  unreachable: "The server cannot be reached. Check your connection, then try again.",
  cut: "The connection was lost before the reply was finished. Reload the page to see the whole reply.",
  generic: "Something went wrong. Please try again.",
};
const RUN_SENTENCES = {
  failed: SENTENCES.failed,
  requires_action: SENTENCES.tool,
  cancelled: SENTENCES.stopped,
  expired: SENTENCES.expired,
};
const SHORTENED = "(The reply was cut short.)";
// After these the reply may still come, so the message stays in the conversation.
const REPLY_MAY_COME = new Set([SENTENCES.unconfirmed, SENTENCES.cut]);
const HINTS = {
  typesNeedToken: "The assistants are listed once the server accepts your access token.",
  typesUnlisted: "The assistants could not be listed; the message below says why.",
  typesNone: "This server has no assistants configured.",
  historyNeedsToken: "Your conversations are listed once the server accepts your access token.",
  historyEmpty: "No conversations yet: your first message starts one.",
  historyUnlisted: "Your conversations could not be listed.",
};
const TITLE_CHARS = 60;
const HISTORY_PAGE = 20;

const $ = (id) => document.getElementById(id);
const ui = {
  conversation: $("conversation"),
  notice: $("notice"),
  status: $("status"),
  composer: $("composer"),
  message: $("message"),
  send: $("send"),
  type: $("assistant-type"),
  newConversation: $("new-conversation"),
  tokenForm: $("token-form"),
  token: $("token"),
  tokenAccepted: $("token-accepted"),
  typesHint: $("types-hint"),
  threads: $("threads"),
  older: $("older"),
  historyHint: $("history-hint"),
};

// Until the server refuses `stream`; then every run of this page load waits in one request.
let streams = true;

// An error already phrased for the reader.
class Problem extends Error {
  constructor(sentence, status) {
    super(sentence);
    this.status = status;
  }
}

function sentenceFor(status, body) {
  if (status === 429 && body && body.code === "budget_exceeded") return budgetSentence(body.reset_at);
  const known = { 401: "unauthorized", 404: "gone", 408: "timeout", 409: "busy", 410: "expired",
    429: "tooMany", 502: "unavailable", 503: "unavailable", 504: "unconfirmed" }[status];
  if (known) return SENTENCES[known];
  if (body && RUN_SENTENCES[body.runStatus]) return RUN_SENTENCES[body.runStatus];
  // The server's own sentence for what the reader can fix (a message too long, for one).
  if ((status === 400 || status === 413) && body && typeof body.error === "string") return body.error;
  return SENTENCES.generic;
}

function failure(status, body) {
  if (status === 401) showTokenForm();
  return new Problem(sentenceFor(status, body), status);
}

async function request(method, path, body, headers = {}) {
  const token = localStorage.getItem(STORED.token);
  const options = { method, headers: { ...headers } };
  if (token) options.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  try {
    return await fetch(API + path, options);
  } catch {
    throw new Problem(SENTENCES.unreachable);
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return {};
  }
}

async function call(method, path, body) {
  const response = await request(method, path, body);
  const data = await readJson(response);
  if (!response.ok) throw failure(response.status, data);
  return data;
}

// --- what the page shows --------------------------------------------------------------------

function showNotice(error) {
  ui.notice.textContent = error instanceof Problem ? error.message : SENTENCES.generic;
  ui.notice.hidden = false;
  if (!(error instanceof Problem)) console.error(error);
}

function clearNotice() {
  ui.notice.hidden = true;
  ui.notice.textContent = "";
}

function showTokenForm() {
  ui.tokenAccepted.hidden = true;
  ui.tokenForm.hidden = false;
  ui.token.focus();
}

// The token row goes once the server has taken the token; a token just entered is confirmed.
function tokenWorks(justEntered) {
  if (!localStorage.getItem(STORED.token)) return;
  ui.tokenForm.hidden = true;
  ui.tokenAccepted.hidden = !justEntered;
}

function showHint(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

function addMessage(role) {
  const item = document.createElement("article");
  item.className = `message ${role}`;
  item.dataset.role = role;
  const who = document.createElement("p");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const text = document.createElement("p");
  text.className = "text";
  item.append(who, text);
  ui.conversation.append(item);
  return item;
}

function setText(item, text) {
  item.querySelector(".text").textContent = text;
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

function textOf(message) {
  return message.content.filter((part) => part.type === "text").map((part) => part.text.value).join("\n");
}

function setWriting(on) {
  ui.send.disabled = on;
  ui.conversation.setAttribute("aria-busy", String(on));
  ui.status.textContent = on ? "The assistant is writing…" : "";
}

// --- the conversation -----------------------------------------------------------------------

function threadPath() {
  return `/threads/${encodeURIComponent(localStorage.getItem(STORED.thread))}`;
}

// A conversation's title is the start of its first message, kept in the thread's metadata.
function titleFor(text) {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1)}…` : line;
}

async function startThread(firstText) {
  const thread = await call("POST", "/threads", { metadata: { title: titleFor(firstText) } });
  localStorage.setItem(STORED.thread, thread.id);
  ui.threads.prepend(historyItem(thread));
  showHint(ui.historyHint, "");
  markCurrent();
}

async function loadTypes() {
  let list;
  try {
    list = await call("GET", "/assistant_types");
  } catch (error) {
    ui.type.replaceChildren();
    ui.type.disabled = true;
    showHint(ui.typesHint, error.status === 401 ? HINTS.typesNeedToken : HINTS.typesUnlisted);
    throw error;
  }
  const chosen = localStorage.getItem(STORED.type);
  ui.type.replaceChildren(...list.data.map((type) => new Option(type.id, type.id, false, type.id === chosen)));
  ui.type.disabled = list.data.length === 0;
  showHint(ui.typesHint, list.data.length ? "" : HINTS.typesNone);
}

async function loadConversation() {
  ui.conversation.replaceChildren();
  if (!localStorage.getItem(STORED.thread)) return;
  let page;
  try {
    page = await call("GET", `${threadPath()}/messages?order=asc&limit=100`);
  } catch (error) {
    if (error.status === 404) forgetThread(localStorage.getItem(STORED.thread));
    throw error;
  }
  for (const message of page.data) setText(addMessage(message.role), textOf(message));
}

async function postMessage(text) {
  if (!localStorage.getItem(STORED.thread)) await startThread(text);
  try {
    return await call("POST", `${threadPath()}/messages`, { role: "user", content: text });
  } catch (error) {
    if (error.status !== 404) throw error;
    // The stored thread is gone (deleted, or another server): start a new one.
    forgetThread(localStorage.getItem(STORED.thread));
    ui.conversation.replaceChildren();
    await startThread(text);
    return call("POST", `${threadPath()}/messages`, { role: "user", content: text });
  }
}

async function send(event) {
  event.preventDefault();
  const text = ui.message.value.trim();
  if (!text || ui.send.disabled) return;
  clearNotice();
  setWriting(true);
  let posted = null;
  let shown = null;
  try {
    posted = await postMessage(text);
    ui.message.value = "";
    shown = addMessage("user");
    setText(shown, text);
    await reply();
  } catch (error) {
    showNotice(error);
    if (posted && !REPLY_MAY_COME.has(error.message)) await takeBack(posted, shown, text);
  } finally {
    showBudget();
    setWriting(false);
    // A click on Send leaves the focus on the button, which was disabled meanwhile.
    if (document.activeElement === document.body || document.activeElement === ui.send) ui.message.focus();
  }
}

async function reply() {
  const item = addMessage("assistant");
  item.dataset.state = "waiting";
  try {
    await (streams ? streamedReply(item) : waitedReply(item));
    item.dataset.state = "done";
  } catch (error) {
    if (item.querySelector(".text").textContent) item.dataset.state = "failed";
    else item.remove();
    throw error;
  }
}

// A message whose reply failed goes back into the box, and out of the thread, so that sending it
// again does not repeat it. If the server will not delete it, it stays shown and in the thread.
async function takeBack(message, shown, text) {
  if (!ui.message.value.trim()) ui.message.value = text;
  try {
    await call("DELETE", `${threadPath()}/messages/${encodeURIComponent(message.id)}`);
    shown.remove();
  } catch {
    shown.dataset.state = "unanswered";
  }
}

function runBody(extra) {
  return ui.type.value ? { assistant_type: ui.type.value, ...extra } : { ...extra };
}

async function streamedReply(item) {
  const response = await request("POST", `${threadPath()}/runs`, runBody({ stream: true }), {
    Accept: "text/event-stream",
  });
  if ((response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
    item.dataset.mode = "stream";
    return readStream(response, item);
  }
  const data = await readJson(response);
  if (response.status === 400 && /stream/i.test(data.error || "")) {
    streams = false;
    return waitedReply(item);
  }
  if (!response.ok) throw failure(response.status, data);
  // A server that answered with the run after all.
  return showRunMessages(item, data);
}

async function waitedReply(item) {
  item.dataset.mode = "blocking";
  const run = await call("POST", `${threadPath()}/runs`, runBody({}));
  return showRunMessages(item, run);
}

async function showRunMessages(item, run) {
  const page = await call("GET", `${threadPath()}/messages?order=asc&limit=100&run_id=${encodeURIComponent(run.id)}`);
  const text = page.data.filter((m) => m.role === "assistant").map(textOf).join("\n\n");
  setText(item, run.status === "incomplete" ? `${text}\n${SHORTENED}` : text);
}

// --- server-sent events ---------------------------------------------------------------------

function parseEvent(block) {
  let name = "message";
  let id;
  const data = [];
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  return data.length ? { name, data: data.join("\n"), id } : null;
}

function parseData(event) {
  try {
    return JSON.parse(event.data);
  } catch {
    return {};
  }
}

function streamProblem(event) {
  const data = parseData(event);
  if (event.name === "error") {
    const error = typeof data.error === "object" && data.error ? data.error : data;
    if (/timeout/.test(error.code)) return new Problem(SENTENCES.timeout);
    const status = Number(error.status);
    if (status) return failure(status, error);
    const said = error.message ?? error.error;
    return new Problem(typeof said === "string" && said ? said : SENTENCES.generic);
  }
  return new Problem(RUN_SENTENCES[event.name.slice("thread.run.".length)] || SENTENCES.generic);
}

// A stream lost mid-reply is read again from the event after the last one shown
// (GET .../runs/{id}/events with Last-Event-ID), after each of these pauses in turn.
const REATTACH_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000, 8000, 8000, 8000, 8000];
const ACTIVE_STATUSES = new Set(["queued", "in_progress", "cancelling"]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function readStream(response, item) {
  const stream = { path: threadPath(), runId: null, lastId: null, texts: new Map() };
  const show = (suffix = "") => setText(item, [...stream.texts.values()].join("\n\n") + suffix);
  for (let attempt = 0; ; ) {
    if (response && (await readEvents(response, stream, show))) return;
    if (!stream.runId || attempt >= REATTACH_DELAYS_MS.length) throw new Problem(SENTENCES.cut);
    await sleep(REATTACH_DELAYS_MS[attempt++]);
    response = await reattach(stream);
    if (response === "stored") {
      // The events are not kept where this request landed: the stored reply, once the run has ended.
      const run = await call("GET", `${stream.path}/runs/${encodeURIComponent(stream.runId)}`);
      if (!ACTIVE_STATUSES.has(run.status)) return showRunMessages(item, run);
      response = null;
    }
  }
}

// The rest of a lost stream: its events (a response), the stored reply ("stored": the events are no
// longer kept, or were all read), or null to try again after the next pause.
async function reattach(stream) {
  const headers = { Accept: "text/event-stream" };
  if (stream.lastId !== null) headers["Last-Event-ID"] = stream.lastId;
  let response;
  try {
    response = await request("GET", `${stream.path}/runs/${encodeURIComponent(stream.runId)}/events`, undefined, headers);
  } catch {
    return null; // unreachable for now
  }
  if ((response.headers.get("Content-Type") || "").startsWith("text/event-stream")) return response;
  if (response.status === 204 || response.status === 410) return "stored";
  if (response.status === 429 || response.status >= 500) return null;
  throw failure(response.status, await readJson(response));
}

// Show the events of `response` as they come; true once the run has ended, false when the
// stream was lost first. A failed run throws its sentence.
async function readEvents(response, stream, show) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
      buffer = blocks.pop();
      for (const block of blocks) {
        const event = parseEvent(block);
        if (!event) continue;
        if (event.name.startsWith("thread.run.") && !stream.runId) stream.runId = parseData(event).id || null;
        if (event.name === "thread.message.delta") {
          const delta = parseData(event);
          const parts = delta.delta?.content || [];
          const added = parts.filter((p) => p.type === "text").map((p) => p.text?.value || "").join("");
          stream.texts.set(delta.id, (stream.texts.get(delta.id) || "") + added);
          show();
        } else if (event.name === "thread.message.completed") {
          const message = parseData(event);
          if (message.role === "assistant") stream.texts.set(message.id, textOf(message));
          show();
        } else if (event.name === "thread.run.completed") {
          return true;
        } else if (event.name === "thread.run.incomplete") {
          show(`\n${SHORTENED}`);
          return true;
        } else if (event.name === "error" || /^thread\.run\.(failed|cancelled|expired|requires_action)$/.test(event.name)) {
          throw streamProblem(event);
        } else if (event.name === "done") {
          throw new Problem(SENTENCES.cut); // ended without the run's end: unknown
        }
        if (event.id !== undefined) stream.lastId = event.id;
      }
    }
  } catch (error) {
    if (error instanceof Problem) throw error;
    return false; // the connection was lost
  } finally {
    reader.cancel().catch(() => {});
  }
}

// --- the history of conversations ---------------------------------------------------------

let olderAfter = null; // the cursor of the next, older page of the history

function threadTitle(thread) {
  if (thread.metadata && thread.metadata.title) return thread.metadata.title;
  return `Conversation of ${new Date(thread.created_at * 1000).toLocaleString()}`;
}

function historyItem(thread) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thread";
  button.dataset.thread = thread.id;
  button.textContent = threadTitle(thread);
  item.append(button);
  return item;
}

function markCurrent() {
  const current = localStorage.getItem(STORED.thread);
  for (const button of ui.threads.querySelectorAll("button.thread")) {
    if (button.dataset.thread === current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

async function loadHistory(older = false) {
  const cursor = older && olderAfter ? `&after=${encodeURIComponent(olderAfter)}` : "";
  let page;
  try {
    page = await call("GET", `/threads?limit=${HISTORY_PAGE}${cursor}`);
  } catch (error) {
    showHint(ui.historyHint, error.status === 401 ? HINTS.historyNeedsToken : HINTS.historyUnlisted);
    throw error;
  }
  const items = page.data.map(historyItem);
  if (older) ui.threads.append(...items);
  else ui.threads.replaceChildren(...items);
  olderAfter = page.has_more ? page.last_id : null;
  ui.older.hidden = !page.has_more;
  showHint(ui.historyHint, ui.threads.children.length ? "" : HINTS.historyEmpty);
  markCurrent();
}

function forgetThread(threadId) {
  if (localStorage.getItem(STORED.thread) === threadId) localStorage.removeItem(STORED.thread);
  ui.threads.querySelector(`button.thread[data-thread="${CSS.escape(threadId)}"]`)?.parentElement.remove();
}

async function openThread(threadId) {
  // While a reply is being written, its conversation stays open.
  if (ui.send.disabled || threadId === localStorage.getItem(STORED.thread)) return;
  localStorage.setItem(STORED.thread, threadId);
  clearNotice();
  markCurrent();
  try {
    await loadConversation();
  } catch (error) {
    showNotice(error);
  }
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

// --- the remaining usage budget (a small line, only when a budget is set) ------------------------

function budgetSentence(resetAt) {
  const when = new Date(resetAt * 1000).toLocaleString();
  return `You have used up your usage budget. You can send messages again after ${when}.`;
}

function budgetLine(budget) {
  // A type's own daily budget replaces the user's for its runs.
  const daily = ((budget.by_type || {})[ui.type.value] || {}).tokens_per_day || budget.tokens_per_day;
  const tokens = [daily, budget.tokens_per_month].filter(Boolean);
  const dollars = [budget.usd_per_day, budget.usd_per_month].filter(Boolean);
  const parts = [];
  if (tokens.length) parts.push(`${Math.min(...tokens.map((b) => b.remaining)).toLocaleString()} tokens`);
  if (dollars.length) parts.push(`$${Math.min(...dollars.map((b) => b.remaining)).toFixed(2)}`);
  return parts.length ? `Budget left: ${parts.join(", ")}` : "";
}

async function showBudget() {
  const line = $("budget");
  try {
    const usage = await call("GET", "/usage");
    line.textContent = budgetLine(usage.budget || {});
  } catch {
    line.textContent = "";
  }
  line.hidden = !line.textContent;
}

// --- start ----------------------------------------------------------------------------------

// Without a token the server accepts, the page says why its lists are empty.
function needsToken() {
  ui.threads.replaceChildren();
  ui.older.hidden = true;
  showHint(ui.historyHint, HINTS.historyNeedsToken);
}

async function start(justEntered = false) {
  clearNotice();
  try {
    await loadTypes();
    tokenWorks(justEntered);
    await loadHistory();
    await loadConversation();
  } catch (error) {
    if (error.status === 401) needsToken();
    showNotice(error);
  }
  showBudget();
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

ui.composer.addEventListener("submit", send);
ui.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.type.addEventListener("change", () => {
  localStorage.setItem(STORED.type, ui.type.value);
  showBudget();
});
ui.newConversation.addEventListener("click", () => {
  if (ui.send.disabled) return;
  localStorage.removeItem(STORED.thread);
  ui.conversation.replaceChildren();
  markCurrent();
  clearNotice();
  ui.message.focus();
});
ui.threads.addEventListener("click", (event) => {
  const button = event.target.closest("button.thread");
  if (button) openThread(button.dataset.thread);
});
ui.older.addEventListener("click", () => loadHistory(true).catch(showNotice));
ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  if (token) localStorage.setItem(STORED.token, token);
  else localStorage.removeItem(STORED.token);
  start(true);
});

ui.token.value = localStorage.getItem(STORED.token) || "";
start();
