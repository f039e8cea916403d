/* supportbot agent console. Data is always rendered with textContent (never innerHTML). */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var STATES = { queued: "En attente", assigned: "Pris", resolved: "Résolu", surveying: "Enquête", closed: "Fermé", abandoned: "Abandonné" };
  var AUTHORS = { customer: "Client", bot: "Bot", agent: "Agent", note: "Note interne", system: "" };
  var TIME = new Intl.DateTimeFormat("fr-FR", { hour: "2-digit", minute: "2-digit" });
  var DAY = new Intl.DateTimeFormat("fr-FR", { weekday: "long", day: "numeric", month: "long", year: "numeric" });
  var ACTION_BUTTONS = ["take", "resolve", "transfer", "send", "note"];
  var me = null;
  var agents = [];
  var current = null;   // the conversation selected
  var shown = null;     // its summary, as last loaded
  var view = "conversation"; // what the detail pane shows: "conversation" or "alerts"
  var busy = false;     // an action is on its way: its buttons stay disabled until it is done
  var drafts = {};      // conversation id -> unsent reply
  var socket = null;
  var conversations = [];
  var alerts = [];
  var unread = 0;

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function api(path, options) {
    options = options || {};
    options.credentials = "same-origin";
    if (options.body && typeof options.body !== "string") {
      options.body = JSON.stringify(options.body);
      options.headers = { "Content-Type": "application/json" };
    }
    return fetch(path, options).then(function (r) {
      if (r.status === 401) { showLogin(); throw new Error("unauthorized"); }
      return r.json();
    });
  }

  function minutes(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 60) return "< 1 min";
    var m = Math.floor(seconds / 60);
    return m < 60 ? m + " min" : Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function clock(ms) {
    var t = document.createElement("time");
    var at = new Date(ms);
    t.dateTime = at.toISOString();
    t.textContent = TIME.format(at);
    t.title = DAY.format(at) + " " + TIME.format(at);
    return t;
  }

  function showLogin() {
    $("console").hidden = true;
    $("logout").hidden = true;
    $("alerts-button").hidden = true;
    $("login").hidden = false;
    $("me").textContent = "";
    $("key").focus();
  }

  function showConsole(info) {
    me = info.agent;
    agents = info.agents || [];
    $("login").hidden = true;
    $("console").hidden = false;
    $("logout").hidden = false;
    $("alerts-button").hidden = false;
    $("me").textContent = me;
    var select = $("transfer-to");
    select.textContent = "";
    var queue = document.createElement("option");
    queue.value = "";
    queue.textContent = "la file d'attente";
    select.appendChild(queue);
    agents.forEach(function (name) {
      if (name === me) return;
      var opt = document.createElement("option");
      opt.value = name;
      opt.textContent = name;
      select.appendChild(opt);
    });
    refreshList();
    loadAlerts();
    live();
  }

  // ------------------------------------------------------------------ panes

  function renderDetail() {
    $("alerts-view").hidden = view !== "alerts";
    $("conversation").hidden = view !== "conversation" || shown === null;
    $("empty").hidden = view !== "conversation" || current !== null;
    $("alerts-button").setAttribute("aria-pressed", view === "alerts" ? "true" : "false");
  }

  // Phones show one pane: the lists, or the detail (a conversation or the alerts).
  function showDetail(on) { $("console").classList.toggle("detail-open", on); }

  // ------------------------------------------------------------------ conversation lists

  function item(conv) {
    var li = document.createElement("li");
    var b = document.createElement("button");
    b.type = "button";
    b.setAttribute("data-conversation", String(conv.id));
    if (current === conv.id) b.setAttribute("aria-current", "true");
    var label = document.createElement("span");
    label.textContent = "#" + conv.id + " · " + conv.customer + " · " + conv.channel +
      (conv.topic ? " · " + conv.topic : "") + (conv.agent && !conv.mine && conv.state === "assigned" ? " · " + conv.agent : "");
    b.appendChild(label);
    var wait = conv.state === "queued" ? conv.waiting_s : conv.pending_s;
    if (wait !== null && wait !== undefined) {
      var w = document.createElement("span");
      w.className = "wait";
      w.textContent = minutes(wait);
      w.setAttribute("aria-label", "attente " + minutes(wait));
      b.appendChild(w);
    }
    b.addEventListener("click", function () { select(conv.id); });
    li.appendChild(b);
    return li;
  }

  function renderLists() {
    var lists = { queue: [], mine: [], others: [], resolved: [] };
    conversations.forEach(function (c) {
      if (c.state === "queued") lists.queue.push(c);
      else if (c.state === "assigned") (c.mine ? lists.mine : lists.others).push(c);
      else lists.resolved.push(c);
    });
    Object.keys(lists).forEach(function (key) {
      var ul = $(key);
      ul.textContent = "";
      lists[key].forEach(function (c) { ul.appendChild(item(c)); });
    });
    $("queue-count").textContent = "(" + lists.queue.length + ")";
    $("mine-count").textContent = "(" + lists.mine.length + ")";
  }

  function refreshList() {
    return api("/api/agent/conversations").then(function (body) {
      conversations = body.conversations;
      renderLists();
    });
  }

  // ------------------------------------------------------------------ one conversation

  function say(text, refused) {
    var notice = $("notice");
    notice.textContent = text || "";
    notice.classList.toggle("refused", !!refused);
  }

  function applyButtons() {
    var c = shown;
    var handling = !!c && (c.state === "queued" || c.state === "assigned");
    $("take").disabled = busy || !c || c.state !== "queued";
    $("resolve").disabled = busy || !handling;
    $("transfer").disabled = busy || !handling;
    $("send").disabled = busy || !c;
    $("note").disabled = busy || !c;
  }

  function setBusy(value) {
    busy = value;
    if (busy) ACTION_BUTTONS.forEach(function (id) { $(id).disabled = true; });
    else applyButtons();
  }

  function select(id) {
    seenAssigned(id);
    // Another conversation: nothing typed or said about the previous one stays on screen.
    if (current !== id) {
      if (current !== null) drafts[current] = $("reply").value;
      $("reply").value = drafts[id] || "";
      $("tag").value = "";
      say("");
      shown = null;
      applyButtons();
    }
    current = id;
    view = "conversation";
    showDetail(true);
    renderDetail();
    return open(id);
  }

  function transcriptLine(ol, line, lastDay) {
    var day = line.at ? DAY.format(new Date(line.at)) : lastDay;
    if (day !== lastDay) {
      var sep = document.createElement("li");
      sep.className = "day";
      sep.textContent = day;
      ol.appendChild(sep);
    }
    var li = document.createElement("li");
    li.className = line.author;
    var who = document.createElement("span");
    who.className = "who";
    who.textContent = (AUTHORS[line.author] || line.author) + (line.name ? " · " + line.name : "");
    if (line.at) who.appendChild(clock(line.at));
    li.appendChild(who);
    li.appendChild(document.createTextNode(line.text));
    ol.appendChild(li);
    return day;
  }

  function open(id) {
    renderLists();
    return api("/api/agent/conversations/" + id).then(function (body) {
      if (current !== id) return;
      var c = body.conversation;
      if (!c) { say("Conversation introuvable.", true); return; }
      shown = c;
      document.dispatchEvent(new CustomEvent("console:conversation", { detail: c })); // tools below
      renderDetail();
      $("conv-title").textContent = "#" + c.id + " · " + c.customer + " (" + c.channel + ")";
      var status = STATES[c.state] || c.state;
      if (c.agent && c.state !== "queued") status += " — " + c.agent;
      if (c.topic) status += " — " + c.topic;
      if (c.state === "queued") status += " — attente " + minutes(c.waiting_s);
      $("conv-status").textContent = status;
      applyButtons();
      var ol = $("transcript");
      ol.textContent = "";
      var day = null;
      body.transcript.forEach(function (line) { day = transcriptLine(ol, line, day); });
    }).catch(function () { /* shown by the login screen */ });
  }

  function act(action, body, done) {
    if (current === null || busy) return Promise.resolve();
    body = body || {};
    body.id = newId();
    var id = current;
    setBusy(true);
    return api("/api/agent/conversations/" + id + "/" + action, { method: "POST", body: body })
      .then(function (res) {
        if (res.ok && done) done();
        if (current === id) say(res.notice || res.chosen || (res.ok ? "" : "Action refusée."), !res.ok);
      }, function (err) {
        if (err.message !== "unauthorized" && current === id) say("La demande a échoué ; réessayez.", true);
      })
      .then(function () {
        setBusy(false);
        return Promise.all([refreshList(), current === id ? open(id) : null]);
      });
  }

  // ------------------------------------------------------------------ alerts

  function renderBadge() {
    var badge = $("alerts-badge");
    badge.hidden = unread === 0;
    badge.textContent = String(unread);
    $("alerts-button").setAttribute("aria-label", unread ? "Alertes, " + unread + " non lue" + (unread > 1 ? "s" : "") : "Alertes");
  }

  function renderAlerts(unreadFrom) {
    var ol = $("alerts");
    ol.textContent = "";
    $("alerts-empty").hidden = alerts.length > 0;
    alerts.forEach(function (a, i) {
      var li = document.createElement("li");
      if (i < unreadFrom) li.className = "unread";
      li.appendChild(clock(a.at));
      var text = document.createElement("span");
      text.className = "text";
      text.textContent = a.text;
      li.appendChild(text);
      if (a.conversation !== null && a.conversation !== undefined) {
        var b = document.createElement("button");
        b.type = "button";
        b.textContent = "Ouvrir #" + a.conversation;
        b.addEventListener("click", function () { select(a.conversation); });
        li.appendChild(b);
      }
      ol.appendChild(li);
    });
  }

  function alertsShown() { return view === "alerts"; }

  function markRead() {
    if (!alerts.length) return Promise.resolve();
    return api("/api/agent/alerts/read", { method: "POST", body: { up_to: alerts[0].id } })
      .then(function (res) { unread = res.unread; renderBadge(); });
  }

  function loadAlerts() {
    return api("/api/agent/alerts").then(function (body) {
      alerts = body.alerts;
      unread = body.unread;
      renderBadge();
      if (alertsShown()) { renderAlerts(unread); markRead(); }
    });
  }

  function showAlerts() {
    view = "alerts";
    showDetail(true);
    renderDetail();
    renderAlerts(unread);
    markRead();
  }

  function onAlert(alert) {
    if (alerts.some(function (a) { return a.id === alert.id; })) return;
    alerts.unshift(alert);
    unread += 1;
    renderBadge();
    if (alertsShown()) { renderAlerts(unread); markRead(); }
  }

  // Conversations routing gave this agent that they have not opened yet: the badge.
  var assignedUnseen = [];

  function renderMineBadge() {
    var badge = $("mine-badge");
    badge.hidden = assignedUnseen.length === 0;
    badge.textContent = String(assignedUnseen.length);
    badge.setAttribute("aria-label", assignedUnseen.length + " nouvelle(s) conversation(s) attribuée(s)");
  }

  function onAssigned(id) {
    if (assignedUnseen.indexOf(id) < 0 && id !== current) assignedUnseen.push(id);
    renderMineBadge();
    $("assigned-notice").textContent = "Nouvelle conversation qui vous est attribuée : #" + id;
    refreshList();
  }

  function seenAssigned(id) {
    var at = assignedUnseen.indexOf(id);
    if (at < 0) return;
    assignedUnseen.splice(at, 1);
    renderMineBadge();
    if (!assignedUnseen.length) $("assigned-notice").textContent = "";
  }

  // ------------------------------------------------------------------ live updates

  function live() {
    if (socket) return;
    var ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws/agent");
    socket = ws;
    ws.onopen = function () { loadAlerts().catch(function () {}); }; // missed while away
    ws.onmessage = function (ev) {
      var frame = JSON.parse(ev.data);
      if (frame.type === "alert") { onAlert(frame.alert); return; }
      if (frame.type === "assigned") { onAssigned(frame.id); return; }
      if (frame.type !== "changed") return;
      refreshList();
      if (current !== null && (frame.all || frame.id === current)) open(current);
    };
    ws.onclose = function () {
      socket = null;
      if (me) setTimeout(live, 2000);
    };
  }

  $("login-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    $("login-error").textContent = "";
    fetch("/agent/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key: $("key").value })
    }).then(function (r) {
      if (!r.ok) {
        $("login-error").textContent = r.status === 429 ? "Trop d'essais, patientez." : "Clé refusée.";
        return;
      }
      $("key").value = "";
      api("/api/agent/me").then(function (info) {
        var next = new URLSearchParams(location.search).get("next");
        if (next === "/dashboard") location.assign("/dashboard");
        else showConsole(info);
      });
    });
  });
  $("logout").addEventListener("click", function () {
    me = null;
    fetch("/agent/logout", { method: "POST", credentials: "same-origin" }).then(showLogin);
    if (socket) socket.close();
  });
  $("alerts-button").addEventListener("click", function () {
    if (!alertsShown()) { showAlerts(); return; }
    view = "conversation";
    showDetail(current !== null);
    renderDetail();
  });
  $("back").addEventListener("click", function () { showDetail(false); });
  $("take").addEventListener("click", function () { act("take"); });
  $("resolve").addEventListener("click", function () { act("resolve", { tag: $("tag").value }); });
  $("transfer").addEventListener("click", function () { act("transfer", { to: $("transfer-to").value || null }); });
  function sendReply(action) {
    var text = $("reply").value.trim();
    if (!text || busy) return;
    var id = current;
    // Cleared once the server took it: a refused reply stays in the box.
    act(action, { text: text }, function () {
      drafts[id] = "";
      if (current === id) $("reply").value = "";
    });
  }
  $("reply-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    sendReply("reply");
  });
  $("reply").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("reply-form").requestSubmit();
  });
  $("note").addEventListener("click", function () { sendReply("note"); });
  setInterval(function () { if (me) refreshList(); }, 30000); // waiting times keep counting

  // ------------------------------------------------------------------ presence (routing)
  // Self-contained: the toggle in the header and the agents' list with their load.

  var available = null;

  function renderPresence(body) {
    var mine = body.me;
    available = mine ? mine.available : true;
    var button = $("presence");
    button.hidden = false;
    button.setAttribute("aria-pressed", available ? "true" : "false");
    button.textContent = available ? "Disponible" : "Absent";
    button.classList.toggle("away", !available);
    var ul = $("roster");
    ul.textContent = "";
    (body.agents || []).forEach(function (a) {
      var li = document.createElement("li");
      var state = a.at_work ? "disponible" : (a.available ? "hors horaires" : "absent");
      li.textContent = a.name + " · " + state + " · " + a.open +
        (body.mode !== "manual" ? " / " + body.max_open : "") + " en cours";
      li.className = a.at_work ? "" : "away";
      if (mine && a.key === mine.key && a.open > 0) li.classList.add("mine");
      ul.appendChild(li);
    });
  }

  function loadPresence() {
    return api("/api/agent/presence").then(renderPresence).catch(function () {});
  }

  $("presence").addEventListener("click", function () {
    api("/api/agent/presence", {
      method: "POST",
      body: { available: !available, id: newId() }
    }).then(loadPresence);
  });
  setInterval(function () { if (me) loadPresence(); }, 30000);
  document.addEventListener("visibilitychange", function () { if (me && !document.hidden) loadPresence(); });
  showConsole = (function (shown) {  // after a login too: the console shows, then presence
    return function (info) { shown(info); loadPresence(); };
  })(showConsole);

  applyButtons();
  window.supportbotConsole = { select: select, api: api, newId: newId, act: act }; // for the tools below
  api("/api/agent/me").then(showConsole).catch(function () { /* login shown */ });
})();

// ---------------------------------------------------------------- agent tools (issue 17)
// Saved replies picker, the customer's history, conversation search. Self-contained: it
// hears which conversation is open from the "console:conversation" event, and uses the
// console's api/select through window.supportbotConsole.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var DATE = new Intl.DateTimeFormat("fr-FR", { day: "numeric", month: "short", year: "numeric" });
  var STATES = { bot: "Bot", queued: "En attente", assigned: "Pris", resolved: "Résolu", surveying: "Enquête", closed: "Fermé", abandoned: "Abandonné" };
  var replies = [];
  var conv = null; // the conversation shown: {id, state, language…}
  var loaded = false;

  function consoleApi() { return window.supportbotConsole; }

  function scores(item) {
    var out = [];
    if (item.nps !== null && item.nps !== undefined) out.push("NPS " + item.nps + "/10");
    if (item.csat !== null && item.csat !== undefined) out.push("CSAT " + item.csat + "/5");
    return out.join(", ");
  }

  function describe(item) {
    var parts = [DATE.format(new Date(item.started_at)), STATES[item.state] || item.state];
    if (item.topic) parts.push(item.topic);
    var s = scores(item);
    if (s) parts.push(s);
    return parts.join(" · ");
  }

  function entry(item, label) {
    var li = document.createElement("li");
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = "#" + item.id + " · " + label;
    b.addEventListener("click", function () { consoleApi().select(item.id); });
    li.appendChild(b);
    if (item.snippet) {
      var p = document.createElement("span");
      p.className = "muted snippet";
      p.textContent = item.snippet;
      li.appendChild(p);
    }
    return li;
  }

  // ---- saved replies
  function textOf(reply) {
    var lang = (conv && conv.language) || "fr";
    return reply.text[lang] || reply.text.fr;
  }

  function renderPicker() {
    var select = $("saved");
    select.textContent = "";
    var none = document.createElement("option");
    none.value = "";
    none.textContent = replies.length ? "— choisir —" : "aucune (replies.yaml)";
    select.appendChild(none);
    replies.forEach(function (r) {
      var o = document.createElement("option");
      o.value = r.shortcut;
      o.textContent = r.shortcut + (r.title ? " — " + r.title : "");
      select.appendChild(o);
    });
    $("saved-box").hidden = !replies.length;
  }

  function preview() {
    var chosen = replies.filter(function (r) { return r.shortcut === $("saved").value; })[0];
    $("saved-preview").textContent = chosen ? textOf(chosen) : "";
    $("send-saved").disabled = !chosen || !conv;
  }

  function sendSaved() {
    var shortcut = $("saved").value;
    if (!shortcut || !conv) return;
    var id = conv.id;
    $("send-saved").disabled = true;
    consoleApi().api("/api/agent/conversations/" + id + "/saved",
      { method: "POST", body: { id: consoleApi().newId(), text: shortcut } })
      .then(function (res) {
        $("notice").textContent = res.ok ? "" : (res.notice || "Action refusée.");
        $("notice").classList.toggle("refused", !res.ok);
        if (res.ok) { $("saved").value = ""; preview(); }
        return consoleApi().select(id);
      })
      .catch(function () { preview(); });
  }

  // ---- the customer's history
  function loadHistory(id) {
    consoleApi().api("/api/agent/conversations/" + id + "/history").then(function (body) {
      if (!conv || conv.id !== id) return;
      var ol = $("history");
      ol.textContent = "";
      var others = body.conversations.filter(function (c) { return !c.current; });
      $("history-count").textContent = others.length ? "(" + others.length + ")" : "(premier contact)";
      others.forEach(function (c) { ol.appendChild(entry(c, describe(c))); });
      if (body.followup) {
        var li = document.createElement("li");
        li.textContent = "Suivi en cours : " + body.followup.status;
        ol.appendChild(li);
      }
    }).catch(function () { /* login shown */ });
  }

  // ---- search
  function search(ev) {
    ev.preventDefault();
    var params = new URLSearchParams();
    [["q", "search-q"], ["topic", "search-topic"], ["from", "search-from"], ["to", "search-to"]]
      .forEach(function (p) { var v = $(p[1]).value.trim(); if (v) params.set(p[0], v); });
    var ul = $("search-results");
    ul.textContent = "";
    if (!params.toString()) return;
    consoleApi().api("/api/agent/search?" + params.toString()).then(function (body) {
      if (body.error) { $("search-status").textContent = body.error; return; }
      $("search-status").textContent = body.conversations.length + " résultat(s)";
      body.conversations.forEach(function (c) { ul.appendChild(entry(c, c.customer + " · " + describe(c))); });
    }).catch(function () { /* login shown */ });
  }

  document.addEventListener("console:conversation", function (ev) {
    var changed = !conv || conv.id !== ev.detail.id;
    conv = ev.detail;
    if (!loaded) {
      loaded = true;
      consoleApi().api("/api/agent/replies").then(function (body) {
        replies = body.replies || [];
        renderPicker();
        preview();
      }).catch(function () { loaded = false; });
    }
    if (changed) loadHistory(conv.id);
    preview();
  });
  $("saved").addEventListener("change", preview); // deferred script: the page is parsed
  $("send-saved").addEventListener("click", sendSaved);
  $("search-form").addEventListener("submit", search);
})();

// ---------------------------------------------------------------- complaints (issue 16)
// The complaint box: the conversation's record (cause, solution, note), selects for the
// cause, category and solution with a note, sent along with "Résoudre", and a button that
// marks the conversation as a complaint. Self-contained like the tools above: a click on
// "Résoudre" is taken here (capture phase, before the console's own handler) only when a
// select or the note is filled; otherwise the console resolves as before.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var FIELDS = ["cause", "category", "solution", "note"];
  var options = null; // {causes, categories, solutions: [{key, label}]}
  var labels = {};    // solution key -> label
  var conv = null;
  var record = null;

  function consoleApi() { return window.supportbotConsole; }

  function fill(select, values) {
    select.textContent = "";
    var none = document.createElement("option");
    none.value = "";
    none.textContent = "— non renseignée —";
    select.appendChild(none);
    values.forEach(function (v) {
      var o = document.createElement("option");
      o.value = v.key;
      o.textContent = v.label;
      select.appendChild(o);
    });
  }

  function plain(values) { return values.map(function (v) { return { key: v, label: v }; }); }

  function loadOptions() {
    if (options) return Promise.resolve(options);
    return consoleApi().api("/api/agent/complaint-options").then(function (body) {
      options = body;
      body.solutions.forEach(function (s) { labels[s.key] = s.label; });
      fill($("complaint-cause"), plain(body.causes));
      fill($("complaint-category"), plain(body.categories));
      fill($("complaint-solution"), body.solutions);
      return body;
    });
  }

  function clearInputs() { FIELDS.forEach(function (f) { $("complaint-" + f).value = ""; }); }

  function picked() {
    var out = {};
    FIELDS.forEach(function (f) { var v = $("complaint-" + f).value.trim(); if (v) out[f] = v; });
    return out;
  }

  function renderRecord() {
    var p = $("complaint-record");
    $("complaint-mark").hidden = record !== null;
    var open = !!conv && (conv.state === "queued" || conv.state === "assigned");
    $("complaint-mark").disabled = !open;
    if (record === null) { p.textContent = "Cette conversation n'est pas une réclamation."; return; }
    var unset = "non renseignée";
    var parts = ["Cause : " + (record.cause || unset),
      "Catégorie : " + (record.category || unset),
      "Solution : " + (record.solution ? (labels[record.solution] || record.solution) : unset)];
    if (record.note) parts.push("Note : " + record.note);
    p.textContent = parts.join(" · ");
  }

  function loadRecord(id) {
    return Promise.all([loadOptions(), consoleApi().api("/api/agent/conversations/" + id + "/complaint")])
      .then(function (res) {
        if (!conv || conv.id !== id) return;
        record = res[1].complaint;
        renderRecord();
      }).catch(function () { /* login shown */ });
  }

  document.addEventListener("console:conversation", function (ev) {
    if (!conv || conv.id !== ev.detail.id) clearInputs();
    conv = ev.detail;
    loadRecord(conv.id);
  });

  document.addEventListener("click", function (ev) {
    if (ev.target !== $("resolve") || $("resolve").disabled) return;
    var fields = picked();
    if (!Object.keys(fields).length) return; // a plain resolution: the console's handler
    ev.stopPropagation();
    fields.tag = $("tag").value;
    var id = conv && conv.id;
    consoleApi().act("resolve", fields, function () { if (conv && conv.id === id) clearInputs(); });
  }, true);

  $("complaint-mark").addEventListener("click", function () { consoleApi().act("complaint"); });
})();
