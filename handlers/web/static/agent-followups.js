/* supportbot agent console: the "Suivis" section (detractors' follow-ups). Self-contained:
   it reads /api/agent/followups?open=1 and posts one step at a time; text via textContent. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var STATUS = { open: "à contacter", contacted: "contacté", resolved: "résolu", unreachable: "injoignable" };
  var STEPS = [["take", "Je m'en charge"], ["contacted", "Contacté"], ["resolved", "Résolu"], ["unreachable", "Injoignable"]];
  var WHEN = new Intl.DateTimeFormat("fr-FR", { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function call(path, body) {
    var options = { credentials: "same-origin" };
    if (body) {
      options.method = "POST";
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(function (r) {
      if (r.status === 401) throw new Error("unauthorized");
      return r.json();
    });
  }

  function scores(f) {
    var parts = [];
    if (f.nps !== null) parts.push("NPS " + f.nps);
    if (f.csat !== null) parts.push("CSAT " + f.csat + "/5");
    return parts.join(", ");
  }

  function item(f) {
    var li = document.createElement("li");
    li.className = "followup" + (f.overdue ? " overdue" : "");
    var head = document.createElement("div");
    head.textContent = "#" + f.id + " · " + (f.customer_name || f.customer) + " · " + scores(f);
    var status = document.createElement("div");
    status.className = "muted";
    status.textContent = STATUS[f.status] + (f.overdue ? " (en retard)" : "") + " · échéance " +
      WHEN.format(new Date(f.due_at)) + " · " + (f.owner_name || "personne");
    var note = document.createElement("input");
    note.type = "text";
    note.maxLength = 2000;
    note.placeholder = "Résultat (note)";
    note.value = f.note || "";
    note.setAttribute("aria-label", "Résultat du suivi #" + f.id);
    var row = document.createElement("div");
    row.className = "row";
    STEPS.forEach(function (step) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = step[1];
      b.addEventListener("click", function () { act(f.id, step[0], note.value); });
      row.appendChild(b);
    });
    var save = document.createElement("button");
    save.type = "button";
    save.textContent = "Enregistrer la note";
    save.addEventListener("click", function () { if (note.value.trim()) act(f.id, "note", note.value); });
    row.appendChild(save);
    li.appendChild(head);
    li.appendChild(status);
    li.appendChild(note);
    li.appendChild(row);
    return li;
  }

  function render(list) {
    var ul = $("followups");
    ul.textContent = "";
    list.forEach(function (f) { ul.appendChild(item(f)); });
    $("followups-count").textContent = list.length ? "(" + list.length + ")" : "";
  }

  function load() {
    if ($("console").hidden) return Promise.resolve();
    return call("/api/agent/followups?open=1").then(function (body) { render(body.followups); })
      .catch(function () { /* logged out: the console shows the login */ });
  }

  function act(id, step, note) {
    return call("/api/agent/followups/" + id + "/" + step, { id: newId(), note: note || "" })
      .then(function (res) { $("followups-notice").textContent = res.notice || ""; })
      .catch(function () {})
      .then(load);
  }

  new MutationObserver(load).observe($("console"), { attributes: true, attributeFilter: ["hidden"] });
  setInterval(load, 30000);
  load();
})();
