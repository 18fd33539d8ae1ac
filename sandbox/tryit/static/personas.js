/* The persona catalogue's "Cloner" button: an editable copy of a case (GET /sandbox/personas/<case>),
 * created with POST /sandbox/personas under the token of the "try it" page (or a new one, kept
 * for that page). A static file, so the page's CSP keeps script-src 'self'. */
(function () {
  "use strict";

  var STORED = "sandbox-token";  // the "try it" page's token (docs.js)
  var dialog = document.getElementById("clone-dialog");
  var source = null;  // the case being cloned, as GET /sandbox/personas/<case> answers it

  function $(id) { return document.getElementById(id); }

  function storedToken() {
    try {
      var minted = JSON.parse(localStorage.getItem(STORED) || "null");
      if (minted && minted.token && new Date(minted.expires_at).getTime() > Date.now() + 60000) {
        return minted.token;
      }
    } catch (e) { /* private mode, or not JSON */ }
    return null;
  }

  function token() {
    var held = storedToken();
    if (held) { return Promise.resolve(held); }
    return fetch("/sandbox/tokens", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" })
      .then(function (response) {
        return response.json().then(function (body) {
          if (response.status !== 201) { throw new Error(body.reason || ("HTTP " + response.status)); }
          try { localStorage.setItem(STORED, JSON.stringify(body)); } catch (e) { /* private mode */ }
          return body.token;
        });
      });
  }

  function showError(message) {
    $("clone-error").textContent = message;
    $("clone-error").hidden = !message;
  }

  function open(name) {
    showError("");
    $("clone-result").hidden = true;
    fetch("/sandbox/personas/" + name.split("/").map(encodeURIComponent).join("/"), {
      headers: storedToken() ? { "X-Api-Key": storedToken() } : {}
    }).then(function (response) {
      return response.json().then(function (body) {
        if (response.status !== 200) { throw new Error(body.reason || ("HTTP " + response.status)); }
        return body;
      });
    }).then(function (found) {
      source = found;
      $("clone-source").textContent = found.case;
      $("clone-method").textContent = found.method;
      $("clone-path").textContent = found.path;
      $("clone-description").value = found.description + " (copie)";
      $("clone-status").value = found.status;
      $("clone-params").value = JSON.stringify(found.params, null, 2);
      $("clone-payload").value = JSON.stringify(found.payload, null, 2);
      if ($("clone-global")) { $("clone-global").checked = false; }  // absent on a public instance
      $("clone-ttl").value = "";
      warnIfSameParams();
      dialog.showModal();
    }).catch(function (error) {
      alert("Ce cas ne peut pas être ouvert : " + error.message);
    });
  }

  // The key a request is matched on (sandbox/population/lookup.py): names without [], recipient
  // and token ignored, values compared as lower-cased text.
  function matchKey(params) {
    var key = {};
    Object.keys(params || {}).forEach(function (name) {
      var bare = name.replace(/\[\]$/, "");
      if (bare === "recipient" || bare === "token") { return; }
      var value = params[name];
      key[bare] = (Array.isArray(value) ? value : [value]).map(function (v) {
        return v === null || v === undefined ? "" : String(v).toLowerCase();
      }).join("\u0000");
    });
    return JSON.stringify(Object.keys(key).sort().map(function (k) { return [k, key[k]]; }));
  }

  // As `fixtures new` says it: a copy with the same params answers in the original's place.
  function warnIfSameParams() {
    var same = false;
    try { same = source && matchKey(JSON.parse($("clone-params").value)) === matchKey(source.params); } catch (e) { /* shown on submit */ }
    $("clone-same").hidden = !same;
    if (same) {
      $("clone-same").textContent = "Mêmes paramètres que le cas d'origine : changez-les, sinon ce persona " +
        "répond à sa place (pour le jeton qui le crée, ou pour tous s'il est visible de tous).";
    }
  }

  function parsed(id, label) {
    try {
      return JSON.parse($(id).value);
    } catch (e) {
      throw new Error(label + " : JSON invalide (" + e.message + ")");
    }
  }

  function submit() {
    showError("");
    $("clone-result").hidden = true;
    var body;
    try {
      body = {
        operation: source.operation,
        description: $("clone-description").value,
        status: parseInt($("clone-status").value, 10),
        params: parsed("clone-params", "Paramètres"),
        payload: parsed("clone-payload", "Réponse"),
        "global": Boolean($("clone-global") && $("clone-global").checked)
      };
      if ($("clone-ttl").value) { body.ttl = parseInt($("clone-ttl").value, 10); }
    } catch (error) {
      showError(error.message);
      return;
    }
    var button = $("clone-submit");
    button.disabled = true;
    token().then(function (value) {
      return fetch("/sandbox/personas", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Api-Key": value },
        body: JSON.stringify(body)
      }).then(function (response) {
        return response.json().then(function (answer) {
          if (response.status !== 201) { throw new Error("Refusé (" + response.status + ") : " + (answer.reason || "")); }
          $("clone-id").textContent = answer.id;
          $("clone-token").value = value;
          $("clone-curl").textContent = answer.curl;
          $("clone-result").hidden = false;
        });
      });
    }).catch(function (error) {
      showError(error.message);
    }).then(function () {
      button.disabled = false;
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll(".sbx-clone"), function (button) {
    button.addEventListener("click", function () { open(button.getAttribute("data-case")); });
  });
  // times as the page's readers write them (the ISO form stays in the datetime attribute)
  Array.prototype.forEach.call(document.querySelectorAll("time[datetime]"), function (time) {
    var when = new Date(time.getAttribute("datetime"));
    if (!isNaN(when.getTime())) { time.textContent = when.toLocaleString(document.documentElement.lang || "fr"); }
  });
  $("clone-submit").addEventListener("click", submit);
  $("clone-params").addEventListener("input", warnIfSameParams);
  $("clone-close").addEventListener("click", function () { dialog.close(); });
}());
