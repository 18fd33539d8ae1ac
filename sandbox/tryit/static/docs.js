/* The "try it" page: Swagger UI on the sandbox's own spec, a one-click sandbox token, and
 * deep links from the persona catalogue (/docs?operation=<x-operationId>&params=<json>).
 * A static file rather than an inline script, so the page's CSP can keep script-src 'self'. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("docs-config").textContent);
  var STORED = "sandbox-token";  // what the token panel shows again after a reload
  var ui;
  var specLoaded = false;
  var pendingToken = null;  // minted before Swagger UI had the spec: applied once it has

  function $(id) { return document.getElementById(id); }

  // ---- Swagger UI ------------------------------------------------------------------
  function start() {
    var options = {
      url: config.url,
      dom_id: config.dom_id,
      deepLinking: config.deepLinking,
      validatorUrl: config.validatorUrl,
      persistAuthorization: config.persistAuthorization,
      displayRequestDuration: config.displayRequestDuration,
      docExpansion: config.docExpansion,
      filter: config.filter,
      // BaseLayout, not StandaloneLayout: no top bar whose box loads a spec from any URL.
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      onComplete: function () {
        specLoaded = true;
        applyToken();
        openRequestedOperation();
      }
    };
    ui = SwaggerUIBundle(options);
    window.ui = ui;  // handy from the browser console, and for tests
  }

  // ---- The token panel ---------------------------------------------------------------
  function scopeBoxes() {
    return Array.prototype.slice.call(document.querySelectorAll('#token-form input[name="scope"]'));
  }

  function countScopes() {
    var boxes = scopeBoxes();
    var checked = boxes.filter(function (b) { return b.checked; }).length;
    $("scope-count").textContent = checked === boxes.length ? "tous (" + checked + ")" : checked + " sur " + boxes.length;
  }

  function setAll(value) {
    scopeBoxes().forEach(function (b) { b.checked = value; });
    countScopes();
  }

  function showError(message) {
    var box = $("token-error");
    box.textContent = message;
    box.hidden = !message;
  }

  function showToken(minted) {
    $("token-value").value = minted.token;
    var expiry = new Date(minted.expires_at);
    $("token-expiry").dateTime = minted.expires_at;
    $("token-expiry").textContent = expiry.toLocaleString("fr-FR") + " (" + minted.expires_at + ")";
    $("token-scopes").textContent = String(minted.scopes.length);
    $("token-result").hidden = false;
  }

  // Every security scheme of the spec gets the token: apiKey (X-Api-Key) on v2, the bearer
  // schemes (jwt_bearer_token, franceConnectToken, sandboxBearer) on v3+ and the sandbox routes.
  function authorizeEverywhere(token) {
    if (!specLoaded) { pendingToken = token; return; }
    var schemes = ui.specSelectors.specJson().getIn(["components", "securitySchemes"]);
    if (!schemes) { return; }
    var payload = {};
    schemes.forEach(function (schema, name) {
      var kind = schema.get("type");
      if (kind === "apiKey" || (kind === "http" && String(schema.get("scheme")).toLowerCase() === "bearer")) {
        payload[name] = { name: name, schema: schema.toJS(), value: token };
      }
    });
    // authorizeWithPersistOption, as the Authorize dialog does: plain authorize is not saved,
    // and the token must survive the persona page's links (persistAuthorization).
    var actions = ui.authActions;
    (actions.authorizeWithPersistOption || actions.authorize)(payload);
  }

  function mint(event) {
    event.preventDefault();
    showError("");
    var boxes = scopeBoxes();
    var scopes = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
    var button = $("get-token");
    button.disabled = true;
    fetch("/sandbox/tokens", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ scopes: scopes })
    }).then(function (response) {
      return response.json().then(function (body) {
        if (response.status !== 201) {
          throw new Error(body.message || body.reason || ("HTTP " + response.status));
        }
        return body;
      });
    }).then(function (minted) {
      authorizeEverywhere(minted.token);
      showToken(minted);
      try { localStorage.setItem(STORED, JSON.stringify(minted)); } catch (e) { /* private mode */ }
    }).catch(function (error) {
      showError("Pas de jeton : " + error.message);
    }).then(function () {
      button.disabled = false;
    });
  }

  function storedToken() {
    try {
      var minted = JSON.parse(localStorage.getItem(STORED) || "null");
      if (minted && Date.parse(minted.expires_at) > Date.now()) { return minted; }
    } catch (e) { /* nothing stored */ }
    return null;
  }

  function restoreToken() {
    var minted = storedToken();
    if (minted) { showToken(minted); }
  }

  // Once the spec is in: the token minted while it loaded, else the one the panel shows
  // again if Swagger UI did not keep its own copy (another tab, storage cleared by hand).
  function applyToken() {
    var minted = storedToken();
    if (pendingToken) {
      authorizeEverywhere(pendingToken);
      pendingToken = null;
    } else if (minted && ui.authSelectors.authorized().size === 0) {
      authorizeEverywhere(minted.token);
    }
  }

  // ---- Deep links from the persona catalogue -------------------------------------------
  function resolveRef(node, spec) {
    if (node && typeof node.$ref === "string" && node.$ref.indexOf("#/") === 0) {
      return node.$ref.slice(2).split("/").reduce(function (at, part) {
        return at && at[part.replace(/~1/g, "/").replace(/~0/g, "~")];
      }, spec);
    }
    return node;
  }

  // The spec's operation whose 200 carries this x-operationId (the fixture folder's name);
  // an OpenAPI operationId is accepted too.
  function findOperation(spec, wanted) {
    var paths = spec.paths || {};
    for (var path in paths) {
      for (var method in paths[path]) {
        var op = paths[path][method];
        if (!op || typeof op !== "object" || !op.responses) { continue; }
        var ids = [op.operationId];
        for (var code in op.responses) {
          var response = resolveRef(op.responses[code], spec);
          if (response) { ids.push(response["x-operationId"]); }
        }
        if (ids.indexOf(wanted) >= 0) {
          return { path: path, method: method, op: op, item: paths[path] };
        }
      }
    }
    return null;
  }

  function whenPresent(find, then, tries) {
    var found = find();
    if (found) { then(found); return; }
    if (tries > 0) { setTimeout(function () { whenPresent(find, then, tries - 1); }, 100); }
  }

  function operationBlock(target) {
    // [data-path], not .opblock-summary-path: deprecated operations use another class
    var summaries = document.querySelectorAll(".opblock-summary [data-path]");
    for (var i = 0; i < summaries.length; i++) {
      var block = summaries[i].closest(".opblock");
      // the method from its label: a deprecated operation's block has no opblock-<method> class
      var method = block && block.querySelector(".opblock-summary-method");
      if (summaries[i].getAttribute("data-path") === target.path && method &&
          method.textContent.trim().toLowerCase() === target.method) {
        return block;
      }
    }
    return null;
  }

  function openRequestedOperation() {
    var query = new URLSearchParams(window.location.search);
    var wanted = query.get("operation");
    if (!wanted) { return; }
    var values = {};
    try { values = JSON.parse(query.get("params") || "{}") || {}; } catch (e) { values = {}; }
    var spec = ui.specSelectors.specJson().toJS();
    var target = findOperation(spec, wanted);
    if (!target) { return; }

    // Every parameter gets a value before the operation renders: the case's, else empty, so
    // Swagger UI does not fill in the spec's examples (an extra parameter means no match).
    var params = (target.item.parameters || []).concat(target.op.parameters || []);
    params.map(function (p) { return resolveRef(p, spec); }).forEach(function (p) {
      if (!p || p["in"] === "header" || p["in"] === "cookie") { return; }
      var value = values[p.name];
      if (value === undefined) { value = values[p.name.replace(/\[\]$/, "")]; }
      if (value === undefined) { value = (p.schema && p.schema.type === "array") ? [] : ""; }
      ui.specActions.changeParam([target.path, target.method], p.name, p["in"], value);
    });

    // Open the operation's tag, then the operation itself under the id Swagger UI derived for
    // it (the last segment of its deep link), then switch it to "Try it out".
    var tag = (target.op.tags && target.op.tags[0]) || "default";
    ui.layoutActions.show(["operations-tag", tag], true);
    whenPresent(function () {
      var block = operationBlock(target);
      if (!block) { return null; }
      if (block.querySelector(".try-out__btn")) { return block; }
      var link = block.querySelector(".opblock-summary [data-path] a");
      var hash = link ? link.getAttribute("href").split("/") : [];
      if (hash.length) { ui.layoutActions.show(["operations", tag, decodeURIComponent(hash[hash.length - 1])], true); }
      return null;
    }, function (block) {
      var button = block.querySelector(".try-out__btn");
      if (!button.classList.contains("cancel")) { button.click(); }
      block.scrollIntoView({ block: "start" });
    }, 300);  // 30 s: a busy machine can take a while to lay out a large spec
  }

  // ---- Wiring ------------------------------------------------------------------------
  $("token-form").addEventListener("submit", mint);
  $("scopes-all").addEventListener("click", function () { setAll(true); });
  $("scopes-none").addEventListener("click", function () { setAll(false); });
  scopeBoxes().forEach(function (b) { b.addEventListener("change", countScopes); });
  countScopes();
  restoreToken();
  start();
})();
