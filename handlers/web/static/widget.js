/* supportbot chat widget: embed with
 *   <script src="http://127.0.0.1:8080/widget.js" data-lang="fr" defer></script>
 * Plain JS, no dependency. Everything shown is set with textContent (never innerHTML),
 * so a message can never inject markup. The panel lives in a shadow DOM so the host
 * page's CSS and ours never mix.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var base = new URL(script ? script.src : "/widget.js", location.href);
  var origin = base.origin;
  var langAttr = (script && script.getAttribute("data-lang")) || navigator.language || "fr";
  var lang = langAttr.toLowerCase().indexOf("en") === 0 ? "en" : "fr";
  var MAX_LENGTH = 4000; // the server writes its web.max_message_length here
  var TEXTS = {
    fr: {
      open: "Discuter avec le support", close: "Fermer la discussion", title: "Support",
      placeholder: "Écrivez votre message…", send: "Envoyer", label: "Votre message",
      you: "Vous", support: "Assistant", agent: "Conseiller", offline: "Connexion perdue, reconnexion…",
      rate_limited: "Doucement ! Vous envoyez trop de messages, réessayez dans quelques secondes.",
      too_long: "Message trop long (maximum {n} caractères).",
      question_closed: "Cette question n'est plus ouverte.",
      unavailable: "Service momentanément indisponible, réessayez.",
      bad_frame: "Message illisible.", answered: "Répondu : ",
      nps_hint: "0 = pas du tout probable, 10 = très probable",
      faces: ["Très insatisfait", "Insatisfait", "Neutre", "Satisfait", "Très satisfait"],
      count: "{n} / {max} caractères", at_limit: "Limite de {max} caractères atteinte."
    },
    en: {
      open: "Chat with support", close: "Close the chat", title: "Support",
      placeholder: "Type your message…", send: "Send", label: "Your message",
      you: "You", support: "Assistant", agent: "Support agent", offline: "Connection lost, reconnecting…",
      rate_limited: "Slow down! You are sending too many messages; try again in a few seconds.",
      too_long: "Message too long ({n} characters at most).",
      question_closed: "This question is no longer open.",
      unavailable: "Service briefly unavailable, please try again.",
      bad_frame: "Unreadable message.", answered: "Answered: ",
      nps_hint: "0 = not at all likely, 10 = extremely likely",
      faces: ["Very unhappy", "Unhappy", "Neutral", "Happy", "Very happy"],
      count: "{n} / {max} characters", at_limit: "{max}-character limit reached."
    }
  };
  var T = TEXTS[lang];
  var KEY = "supportbot.token";
  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI',sans-serif}",
    ".launcher{position:fixed;right:20px;bottom:20px;width:60px;height:60px;border-radius:50%;display:flex;align-items:center;justify-content:center;",
    "border:0;background:#2457c5;color:#fff;font-size:28px;cursor:pointer;box-shadow:0 4px 14px #0004;z-index:2147483000}",
    ".launcher:focus-visible,button:focus-visible,textarea:focus-visible{outline:3px solid #ffb000;outline-offset:2px}",
    ".panel{position:fixed;right:20px;bottom:92px;width:360px;max-width:calc(100vw - 40px);height:520px;",
    "max-height:calc(100vh - 120px);background:#fff;border-radius:12px;box-shadow:0 8px 30px #0005;",
    "display:flex;flex-direction:column;overflow:hidden;z-index:2147483000;color:#1b1b1b}",
    ".panel[hidden]{display:none}",
    "header{background:#2457c5;color:#fff;padding:12px 14px;display:flex;justify-content:space-between;align-items:center}",
    "header h2{margin:0;font-size:16px}",
    "header button{background:none;border:0;color:#fff;font-size:22px;cursor:pointer}",
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f4f6fb}",
    ".msg{max-width:85%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;word-wrap:break-word;font-size:14px;line-height:1.35}",
    ".msg.customer{align-self:flex-end;background:#2457c5;color:#fff;border-bottom-right-radius:3px}",
    ".msg.support{align-self:flex-start;background:#fff;border:1px solid #d9deea;border-bottom-left-radius:3px}",
    ".msg.agent{border-color:#2457c5;background:#eef3ff}",
    ".who{display:block;font-size:11px;font-weight:600;color:#2457c5;margin-bottom:2px}",
    ".notice{align-self:center;font-size:12px;color:#5a5f6b;text-align:center}",
    ".choices{display:flex;flex-wrap:wrap;gap:6px;margin-top:8px}",
    ".choices button{border:1px solid #2457c5;background:#fff;color:#2457c5;border-radius:16px;padding:5px 11px;font-size:14px;cursor:pointer;min-width:34px}",
    ".choices button:hover{background:#e8eefb}",
    ".choices button[disabled]{opacity:.45;cursor:default}",
    ".choices button.chosen{background:#2457c5;color:#fff;opacity:1}",
    ".hint{font-size:11px;color:#5a5f6b;margin-top:4px}",
    ".at{display:block;font-size:10px;opacity:.7;margin-top:3px;text-align:right}",
    ".day{align-self:center;font-size:11px;color:#5a5f6b;margin:4px 0}",
    "form{display:flex;flex-wrap:wrap;gap:4px 6px;padding:10px 10px 6px;border-top:1px solid #e1e4ec}",
    "textarea{flex:1;min-width:0;resize:none;height:42px;border:1px solid #c3c8d4;border-radius:8px;padding:8px;font-size:14px}",
    "form button{background:#2457c5;color:#fff;border:0;border-radius:8px;padding:0 14px;font-size:14px;cursor:pointer}",
    ".count{flex-basis:100%;font-size:11px;color:#5a5f6b;text-align:right}",
    ".count.full{color:#b00020;font-weight:600}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}"
  ].join("");

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function bubbleIcon() {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "28");
    svg.setAttribute("height", "28");
    svg.setAttribute("aria-hidden", "true");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("fill", "currentColor");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
    svg.appendChild(path);
    return svg;
  }

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  var host = el("div");
  host.setAttribute("data-supportbot", "widget");
  var root = host.attachShadow({ mode: "open" });
  var style = el("style");
  style.textContent = CSS;
  root.appendChild(style);

  var launcher = el("button", "launcher");
  launcher.appendChild(bubbleIcon());
  launcher.type = "button";
  launcher.setAttribute("aria-label", T.open);
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-controls", "supportbot-panel");

  var panel = el("section", "panel");
  panel.id = "supportbot-panel";
  panel.hidden = true;
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", T.title);
  var header = el("header");
  header.appendChild(el("h2", "", T.title));
  var closeBtn = el("button", "", "×");
  closeBtn.type = "button";
  closeBtn.setAttribute("aria-label", T.close);
  header.appendChild(closeBtn);
  var log = el("div", "log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  var form = el("form");
  var label = el("label", "sr", T.label);
  label.htmlFor = "supportbot-input";
  var input = el("textarea");
  input.id = "supportbot-input";
  input.placeholder = T.placeholder;
  input.maxLength = MAX_LENGTH; // a longer paste stops here, visibly, instead of being refused
  input.setAttribute("aria-label", T.label);
  input.setAttribute("aria-describedby", "supportbot-count");
  var sendBtn = el("button", "", T.send);
  sendBtn.type = "submit";
  var counter = el("div", "count");
  counter.id = "supportbot-count";
  form.appendChild(label);
  form.appendChild(input);
  form.appendChild(sendBtn);
  form.appendChild(counter);
  panel.appendChild(header);
  panel.appendChild(log);
  panel.appendChild(form);
  root.appendChild(panel);
  root.appendChild(launcher);

  var lines = {}; // seq -> {node, buttons}
  var lastSeq = 0;
  var lastDay = null;
  var socket = null;
  var outbox = []; // frames not yet sent (offline)
  var unsent = {}; // message id -> text sent: back into the box if the server refuses it
  var greeted = false;
  var retry = 500;
  var TIME = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });
  var DAY = new Intl.DateTimeFormat(lang, { weekday: "long", day: "numeric", month: "long" });
  var CSAT = /^c\d+:csat:([1-5])$/;

  function scroll() { log.scrollTop = log.scrollHeight; }

  function count() {
    var n = input.value.length;
    counter.textContent = T.count.replace("{n}", n).replace("{max}", MAX_LENGTH);
    counter.classList.toggle("full", n >= MAX_LENGTH);
    if (n >= MAX_LENGTH) counter.textContent += " " + T.at_limit.replace("{max}", MAX_LENGTH);
  }

  function stamp(bubble, ms) {
    if (!ms) return;
    var at = new Date(ms);
    var day = DAY.format(at);
    if (day !== lastDay) {
      log.appendChild(el("div", "day", day));
      lastDay = day;
    }
    var t = el("time", "at", TIME.format(at));
    t.dateTime = at.toISOString();
    bubble.appendChild(t);
  }

  function notice(text) {
    var node = el("div", "notice", text);
    node.setAttribute("role", "status");
    log.appendChild(node);
    scroll();
  }

  function markChosen(seq, labelText) {
    var line = lines[seq];
    if (!line) return;
    line.buttons.forEach(function (b) {
      b.disabled = true;
      if (b.getAttribute("data-label") === labelText) {
        b.classList.add("chosen");
        b.setAttribute("aria-pressed", "true");
      }
    });
    if (line.node) line.node.setAttribute("data-answered", labelText);
  }

  function addLine(line) {
    if (lines[line.seq]) return;
    var mine = line.author === "customer";
    var bubble = el("div", "msg " + (mine ? "customer" : "support " + line.author));
    bubble.setAttribute("data-seq", String(line.seq));
    // An agent's line is labelled with their display name ("Paul"); older lines: "Agent".
    if (line.author === "agent") bubble.appendChild(el("span", "who", line.name || T.agent));
    else bubble.appendChild(el("span", "sr", (mine ? T.you : T.support) + " : "));
    bubble.appendChild(document.createTextNode(line.text));
    var buttons = [];
    var count = 0;
    (line.choices || []).forEach(function (row) { count += row.length; });
    if (count) {
      var box = el("div", "choices");
      box.setAttribute("role", "group");
      (line.choices || []).forEach(function (row) {
        row.forEach(function (choice) {
          // A smiley also shows its score: some systems have no emoji font.
          var csat = CSAT.exec(choice.token);
          var b = el("button", "", csat ? choice.label + " " + csat[1] : choice.label);
          b.type = "button";
          b.setAttribute("data-label", choice.label);
          if (csat) b.setAttribute("aria-label", T.faces[Number(csat[1]) - 1] + " " + choice.label + " " + csat[1]);
          b.addEventListener("click", function () {
            buttons.forEach(function (x) { x.disabled = true; });
            transmit({ type: "choice", id: newId(), seq: line.seq, token: choice.token });
          });
          buttons.push(b);
          box.appendChild(b);
        });
      });
      bubble.appendChild(box);
      if (count === 11) bubble.appendChild(el("div", "hint", T.nps_hint));
    }
    if (!mine) {
      // Only the latest question is open: earlier unanswered buttons no longer apply.
      Object.keys(lines).forEach(function (seq) {
        lines[seq].buttons.forEach(function (b) { b.disabled = true; });
      });
    }
    lines[line.seq] = { node: bubble, buttons: buttons };
    stamp(bubble, line.at);
    log.appendChild(bubble);
    if (line.chosen) markChosen(line.seq, line.chosen);
    if (line.seq > lastSeq) lastSeq = line.seq;
    scroll();
  }

  function onFrame(frame) {
    if (frame.type === "line") addLine(frame);
    else if (frame.type === "chosen") markChosen(frame.seq, frame.label);
    else if (frame.type === "notice") notice(frame.text);
    else if (frame.type === "error") {
      var text = T[frame.code] || T.unavailable;
      notice(text.replace("{n}", frame.limit || ""));
      var refused = frame.code === "rate_limited" || frame.code === "too_long" ||
        (frame.code === "unavailable" && frame.stored === false);
      if (refused && unsent[frame.id]) {
        giveBack(unsent[frame.id]); // refused before it was stored: the customer keeps it
        delete unsent[frame.id];
      }
      if (frame.code === "question_closed" && lines[frame.seq]) {
        lines[frame.seq].buttons.forEach(function (b) { b.disabled = true; });
      }
    }
  }

  function transmit(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
    else outbox.push(frame);
  }

  function token() {
    var saved = null;
    try { saved = localStorage.getItem(KEY); } catch (e) { /* storage blocked */ }
    if (saved) return Promise.resolve(saved);
    return fetch(origin + "/api/web/session", { method: "POST" })
      .then(function (r) { if (!r.ok) throw new Error("session " + r.status); return r.json(); })
      .then(function (body) {
        try { localStorage.setItem(KEY, body.token); } catch (e) { /* storage blocked */ }
        return body.token;
      });
  }

  function connect() {
    token().then(function (tok) {
      var url = origin.replace(/^http/, "ws") + "/ws/widget?token=" + encodeURIComponent(tok) +
        "&since=" + lastSeq + "&lang=" + lang;
      var ws = new WebSocket(url);
      socket = ws;
      ws.onopen = function () {
        retry = 500;
        var pending = outbox;
        outbox = [];
        pending.forEach(function (f) { ws.send(JSON.stringify(f)); });
      };
      ws.onmessage = function (ev) { onFrame(JSON.parse(ev.data)); };
      ws.onclose = function (ev) {
        socket = null;
        if (ev.code === 1006 && !ws.everOpened) {
          // Refused before opening (e.g. a token signed with another secret): start afresh.
          try { localStorage.removeItem(KEY); } catch (e) { /* storage blocked */ }
        }
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 15000);
      };
      ws.addEventListener("open", function () { ws.everOpened = true; });
    }).catch(function () {
      notice(T.offline);
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    });
  }

  function giveBack(text) {
    input.value = input.value ? text + "\n" + input.value : text;
    count();
  }

  function send() {
    var text = input.value.trim();
    if (!text) return;
    if (text.length > MAX_LENGTH) {
      notice(T.too_long.replace("{n}", MAX_LENGTH)); // kept in the box, to shorten
      return;
    }
    var id = newId();
    unsent[id] = text;
    input.value = "";
    count();
    transmit({ type: "message", id: id, text: text });
  }

  function greet() {
    // An empty conversation: ask the bot for its greeting (the server sends it once).
    if (greeted || lastSeq > 0) return;
    greeted = true;
    transmit({ type: "hello", id: newId() });
  }

  function open() {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", T.close);
    scroll(); // lines replayed while the panel was hidden: show the latest, not the first
    input.focus();
    if (!socket) connect();
    greet();
  }
  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", T.open);
    launcher.focus();
  }

  launcher.addEventListener("click", function () { if (panel.hidden) open(); else close(); });
  closeBtn.addEventListener("click", close);
  panel.addEventListener("keydown", function (ev) { if (ev.key === "Escape") close(); });
  form.addEventListener("submit", function (ev) { ev.preventDefault(); send(); });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); send(); }
  });
  input.addEventListener("input", count);
  count();

  function mount() {
    document.body.appendChild(host);
    var had = null;
    try { had = localStorage.getItem(KEY); } catch (e) { /* storage blocked */ }
    if (had) connect(); // a returning visitor sees their conversation on reload
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
