/* supportbot agent console. Data is always rendered with textContent (never innerHTML). */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var STATES = { queued: "En attente", assigned: "Pris", resolved: "Résolu", surveying: "Enquête", closed: "Fermé", abandoned: "Abandonné" };
  var AUTHORS = { customer: "Client", bot: "Bot", agent: "Agent", note: "Note interne", system: "" };
  var me = null;
  var agents = [];
  var current = null;
  var socket = null;
  var conversations = [];

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

  function showLogin() {
    $("console").hidden = true;
    $("logout").hidden = true;
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
    live();
  }

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
    b.addEventListener("click", function () { open(conv.id); });
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
  }

  function refreshList() {
    return api("/api/agent/conversations").then(function (body) {
      conversations = body.conversations;
      renderLists();
    });
  }

  function open(id) {
    current = id;
    renderLists();
    return api("/api/agent/conversations/" + id).then(function (body) {
      if (current !== id) return;
      var c = body.conversation;
      $("empty").hidden = true;
      $("conversation").hidden = false;
      $("conv-title").textContent = "#" + c.id + " · " + c.customer + " (" + c.channel + ")";
      var status = STATES[c.state] || c.state;
      if (c.agent && c.state !== "queued") status += " — " + c.agent;
      if (c.topic) status += " — " + c.topic;
      if (c.state === "queued") status += " — attente " + minutes(c.waiting_s);
      $("conv-status").textContent = status;
      $("take").disabled = c.state !== "queued";
      var open = c.state === "queued" || c.state === "assigned";
      $("resolve").disabled = !open;
      $("transfer").disabled = !open;
      var ol = $("transcript");
      ol.textContent = "";
      body.transcript.forEach(function (line) {
        var li = document.createElement("li");
        li.className = line.author;
        var who = document.createElement("span");
        who.className = "who";
        who.textContent = (AUTHORS[line.author] || line.author) + (line.name ? " · " + line.name : "");
        li.appendChild(who);
        li.appendChild(document.createTextNode(line.text));
        ol.appendChild(li);
      });
    }).catch(function () { /* shown by the login screen */ });
  }

  function act(action, body) {
    if (current === null) return Promise.resolve();
    body = body || {};
    body.id = newId();
    var id = current;
    return api("/api/agent/conversations/" + id + "/" + action, { method: "POST", body: body })
      .then(function (res) {
        $("notice").textContent = res.notice || res.chosen || (res.ok ? "" : "Refusé");
        return Promise.all([refreshList(), open(id)]);
      });
  }

  function live() {
    if (socket) return;
    var ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws/agent");
    socket = ws;
    ws.onmessage = function (ev) {
      var frame = JSON.parse(ev.data);
      if (frame.type !== "changed") return;
      refreshList();
      if (frame.id === current) open(current);
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
  $("take").addEventListener("click", function () { act("take"); });
  $("resolve").addEventListener("click", function () { act("resolve", { tag: $("tag").value }); });
  $("transfer").addEventListener("click", function () { act("transfer", { to: $("transfer-to").value || null }); });
  $("reply-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = $("reply").value.trim();
    if (!text) return;
    $("reply").value = "";
    act("reply", { text: text });
  });
  $("reply").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("reply-form").requestSubmit();
  });
  $("note").addEventListener("click", function () {
    var text = $("reply").value.trim();
    if (!text) return;
    $("reply").value = "";
    act("note", { text: text });
  });
  setInterval(function () { if (me) refreshList(); }, 30000); // waiting times keep counting

  api("/api/agent/me").then(showConsole).catch(function () { /* login shown */ });
})();
