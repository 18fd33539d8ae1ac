/* "Se connecter avec FranceConnect" on the "try it" page, with the sandbox's built-in FranceConnect.
 *
 * On /docs: a button opens the citizen picker in a popup (same window when popups are blocked);
 * the access token that comes back is sent as `Authorization: Bearer` on the FranceConnect routes
 * only (a Swagger UI request interceptor), so the other routes keep the sandbox token.
 * On /franceconnect/essayer/retour (the redirect address): the code is exchanged for the token
 * with the default client, whose secret is public, and handed to the page that asked. */
(function () {
  "use strict";

  var STORED = "sandbox-franceconnect";
  var LOCALE = document.documentElement.lang || "fr";  // times as the page's readers write them
  var PENDING = "sandbox-franceconnect-state";
  var CALLBACK = "/franceconnect/essayer/retour";

  function randomString() {
    var bytes = new Uint8Array(24);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function query(params) {
    return Object.keys(params).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
    }).join("&");
  }

  // ---- the redirect address -----------------------------------------------------------------
  var status = document.getElementById("fc-callback-status");
  if (status) {
    var params = new URLSearchParams(window.location.search);
    var pending = JSON.parse(window.localStorage.getItem(PENDING) || "null");
    if (params.get("error")) {
      status.textContent = "Connexion refusée : " + (params.get("error_description") || params.get("error"));
      return;
    }
    if (!pending || pending.state !== params.get("state")) {
      status.textContent = "Réponse inattendue (state inconnu) : recommencez depuis la page « essayer ».";
      return;
    }
    var exchange = { grant_type: "authorization_code", code: params.get("code"),
                     redirect_uri: window.location.origin + CALLBACK,
                     client_id: pending.client_id, client_secret: pending.client_secret };
    if (pending.ttl) { exchange.sandbox_ttl = pending.ttl; }  // the page's longer token (views.py)
    fetch(pending.token, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: query(exchange)
    }).then(function (response) { return response.json(); }).then(function (token) {
      if (!token.access_token) { throw new Error(token.error_description || token.error || "pas de jeton"); }
      token.expires_at = Date.now() + token.expires_in * 1000;
      window.localStorage.setItem(STORED, JSON.stringify(token));
      window.localStorage.removeItem(PENDING);
      if (window.opener && !window.opener.closed) {
        window.opener.postMessage({ type: STORED, token: token }, window.location.origin);
        status.textContent = "Connecté·e : vous pouvez fermer cette fenêtre.";
        window.close();
      } else {
        window.location.assign("/docs");
      }
    }).catch(function (error) {
      status.textContent = "Échec de l'échange du code : " + error.message;
    });
    return;
  }

  // ---- the "try it" page ---------------------------------------------------------------------
  var panel = document.getElementById("sandbox-token");
  if (!panel) { return; }
  var config = null;
  var section = document.createElement("div");
  section.id = "franceconnect-login";
  section.className = "sbx-franceconnect";
  section.innerHTML = '<p><button type="button" class="btn authorize" id="franceconnect-button" disabled>' +
    "Se connecter avec FranceConnect</button> " +
    '<span id="franceconnect-status" role="status">Routes FranceConnect : connectez-vous comme une personne ' +
    "fictive du bac à sable ; son jeton d'accès sera envoyé sur ces routes seulement.</span></p>";
  panel.appendChild(section);
  var button = document.getElementById("franceconnect-button");
  var line = document.getElementById("franceconnect-status");

  function current() {
    try {
      var token = JSON.parse(window.localStorage.getItem(STORED) || "null");
      return token && token.expires_at > Date.now() ? token : null;
    } catch (e) { return null; }
  }

  function isFranceConnectRoute(url) {
    if (!config) { return false; }
    var path = new URL(url, window.location.origin).pathname;
    return config.routes.indexOf(path) !== -1;
  }

  function installInterceptor() {
    if (!window.ui || !window.ui.getConfigs) { window.setTimeout(installInterceptor, 200); return; }
    var configs = window.ui.getConfigs();
    if (configs.franceConnectInstalled) { return; }
    var previous = configs.requestInterceptor;
    configs.requestInterceptor = function (request) {
      var token = current();
      if (token && isFranceConnectRoute(request.url)) {
        request.headers.Authorization = "Bearer " + token.access_token;
      }
      return previous ? previous(request) : request;
    };
    configs.franceConnectInstalled = true;
  }

  function show(token) {
    if (!token) { return; }
    var until = new Date(token.expires_at);
    line.textContent = "Connecté·e avec FranceConnect (jeton valable jusqu'au " + until.toLocaleString(LOCALE) +
      ", scopes : " + token.scope.split(" ").length + ") : les routes FranceConnect l'utilisent.";
    line.dataset.token = token.access_token;
  }

  function login() {
    // the page asks for a token it can explore with (config.ttl), not FranceConnect's 60 s
    var pending = { state: randomString() + randomString(), client_id: config.client_id,
                    client_secret: config.client_secret, token: config.token, ttl: config.ttl };
    window.localStorage.setItem(PENDING, JSON.stringify(pending));
    var url = config.authorize + "?" + query({
      client_id: config.client_id, redirect_uri: window.location.origin + CALLBACK, response_type: "code",
      scope: config.scope, state: pending.state, nonce: randomString() + randomString(),
      acr_values: config.acr_values
    });
    var popup = window.open(url, "franceconnect", "width=1100,height=850");
    if (!popup) { window.location.assign(url); }
  }

  window.addEventListener("message", function (event) {
    if (event.origin !== window.location.origin || !event.data || event.data.type !== STORED) { return; }
    show(event.data.token);
  });

  function lasting(seconds) {
    if (seconds < 120 || seconds % 60) { return seconds + " s"; }
    return seconds % 3600 ? seconds / 60 + " min" : seconds / 3600 + " h";
  }

  fetch("/franceconnect/essayer/config").then(function (r) { return r.json(); }).then(function (loaded) {
    config = loaded;
    var lifetime = document.createElement("p");
    lifetime.id = "franceconnect-lifetime";
    lifetime.className = "sbx-hint";
    lifetime.textContent = "Le jeton FranceConnect obtenu ici vit " + lasting(config.ttl) + ", pour explorer à la " +
      "main ; un client de l'API reçoit celui de FranceConnect, valable " + lasting(config.api_ttl) + ".";
    section.appendChild(lifetime);
    button.disabled = false;
    button.addEventListener("click", login);
    installInterceptor();
    show(current());
  });
}());
