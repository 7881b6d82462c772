// Sign-in through the hospital's identity provider: OAuth 2.0 authorization code flow with
// PKCE (RFC 7636), as a public client. Shown only when the service names a provider
// (/dashboard/config.json, from JWT_JWKS_URL and OIDC_*). The verifier and state live in this
// tab's sessionStorage between the redirect and the return.

const KEY = "dashboard.oidc";

function base64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function random(size = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(size)));
}

function redirectUri() {
  return `${location.origin}${location.pathname}`;
}

export async function startSignIn(oidc) {
  const verifier = random(48);
  const stateValue = random(16);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(KEY, JSON.stringify({ verifier, state: stateValue }));
  const url = new URL(oidc.authorization_url);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: oidc.client_id,
    redirect_uri: redirectUri(),
    scope: oidc.scope,
    state: stateValue,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

// On the return from the provider (?code=…&state=…): the token, or null when this is no return.
export async function completeSignIn(oidc) {
  const params = new URLSearchParams(location.search);
  const code = params.get("code");
  const returned = params.get("state");
  const providerError = params.get("error");
  if (!code && !providerError) return null;
  history.replaceState(null, "", location.pathname);
  const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
  sessionStorage.removeItem(KEY);
  if (providerError) throw new Error(params.get("error_description") || providerError);
  if (!saved || saved.state !== returned) throw new Error("the sign-in did not start here (state mismatch)");
  const response = await fetch(oidc.token_url, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code,
      redirect_uri: redirectUri(),
      client_id: oidc.client_id,
      code_verifier: saved.verifier,
    }),
  });
  if (!response.ok) throw new Error(`the provider answered ${response.status}`);
  const tokens = await response.json();
  // The API takes the provider's access token (a JWT it verifies by the provider's JWKS).
  const token = tokens.access_token || tokens.id_token;
  if (!token) throw new Error("the provider sent no token");
  return token;
}
