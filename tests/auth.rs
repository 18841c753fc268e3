//! Login, JWT issue and verification, and which routes auth guards (contract §1, §2, §3.1, §11.3-4).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{assert_error, decode, unix_now, TestServer, PASS, USER};
use reqwest::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

/// The failure delay the harness configures (`STREAMCORE_AUTH_LOGIN_FAILURE_DELAY_MS`).
const FAILURE_DELAY: Duration = Duration::from_millis(300);

/// Decodes one base64url JWT segment as JSON.
fn segment(part: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("segment {part:?} is not base64url: {e}"));
    serde_json::from_slice(&bytes).expect("segment is JSON")
}

/// Header and claims of a JWT, without checking the signature.
fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS compact token: {token}");
    assert!(!parts[2].is_empty(), "token has no signature: {token}");
    (segment(parts[0]), segment(parts[1]))
}

/// Logs in with the given raw request and returns the tokens.
async fn login_pair(srv: &TestServer) -> (String, String) {
    let (status, body) = decode(
        srv.http
            .post(srv.url("/api/login"))
            .json(&json!({"username": USER, "password": PASS}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "login: {body}");
    (
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string(),
        body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_string(),
    )
}

/// A GET with an explicit bearer token (or none).
fn get_with(srv: &TestServer, path: &str, token: Option<&str>) -> RequestBuilder {
    let req = srv.http.get(srv.url(path));
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// Asserts the exact 401 of the JWT guard, challenge header included.
async fn assert_unauthorized(res: Response, what: &str) {
    let challenge = res
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = decode(res).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(
        body,
        json!({"code": 401, "message": "Unauthorized", "details": ["Missing or invalid JWT token"]}),
        "{what}"
    );
    assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}");
}

/// Sends a login request and returns status, body and how long the answer took.
async fn timed_login(req: RequestBuilder) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let res = req.send().await.unwrap();
    let (status, body) = decode(res).await;
    (status, body, started.elapsed())
}

#[tokio::test]
async fn login_issues_hs256_access_and_refresh_tokens() {
    let srv = TestServer::start_with_auth(&[]).await;
    let before = unix_now();
    let (access, refresh) = login_pair(&srv).await;
    let after = unix_now();

    let (access_header, access_claims) = jwt_parts(&access);
    let (refresh_header, refresh_claims) = jwt_parts(&refresh);
    for (header, claims, usefor, exi) in [
        (&access_header, &access_claims, "access", 600),
        (&refresh_header, &refresh_claims, "refresh", 86400),
    ] {
        assert_eq!(header["alg"], "HS256", "{header}");
        assert_eq!(claims["iss"], "datarhei-core", "{claims}");
        assert_eq!(claims["sub"], USER, "{claims}");
        assert_eq!(claims["usefor"], usefor, "{claims}");
        assert_eq!(claims["exi"], json!(exi), "{claims}");
        let iat = claims["iat"].as_u64().expect("iat is a number");
        let exp = claims["exp"].as_u64().expect("exp is a number");
        assert!(
            (before..=after).contains(&iat),
            "iat {iat} not in [{before}, {after}]"
        );
        assert_eq!(exp - iat, exi, "{claims}");
        let jti = claims["jti"].as_str().expect("jti is a string");
        assert!(!jti.is_empty());
    }
    assert_ne!(access_claims["jti"], refresh_claims["jti"]);

    // A second login issues fresh ids.
    let (access2, _) = login_pair(&srv).await;
    assert_ne!(jwt_parts(&access2).1["jti"], access_claims["jti"]);

    // The access token opens the API.
    let res = get_with(&srv, "/api/v3/process", Some(&access))
        .send()
        .await
        .unwrap();
    let (status, body) = decode(res).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn wrong_credentials_are_401_after_the_failure_delay() {
    let srv = TestServer::start_with_auth(&[]).await;
    for (username, password) in [(USER, "wrong"), ("nobody", PASS), ("", "")] {
        let (status, body, took) = timed_login(
            srv.http
                .post(srv.url("/api/login"))
                .json(&json!({"username": username, "password": password})),
        )
        .await;
        assert_error(status, &body, 401);
        let details = body["details"].to_string();
        assert!(
            details.contains("Invalid authorization credentials"),
            "{body}"
        );
        assert!(
            took >= FAILURE_DELAY,
            "failed login answered after {took:?}"
        );
    }
}

#[tokio::test]
async fn unusable_login_bodies_are_400_after_the_failure_delay() {
    let srv = TestServer::start_with_auth(&[]).await;
    let url = srv.url("/api/login");
    let cases: Vec<(&str, RequestBuilder)> = vec![
        ("no body", srv.http.post(&url)),
        (
            "empty JSON body",
            srv.http.post(&url).header(CONTENT_TYPE, "application/json"),
        ),
        (
            "not JSON",
            srv.http
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .body("username=admin&password=secret-pw"),
        ),
        (
            "right credentials, wrong content type",
            srv.http
                .post(&url)
                .header(CONTENT_TYPE, "text/plain")
                .body(json!({"username": USER, "password": PASS}).to_string()),
        ),
        (
            "missing password",
            srv.http.post(&url).json(&json!({"username": USER})),
        ),
        (
            "missing username",
            srv.http.post(&url).json(&json!({"password": PASS})),
        ),
        (
            "null password",
            srv.http
                .post(&url)
                .json(&json!({"username": USER, "password": null})),
        ),
        ("JSON string", srv.http.post(&url).json(&json!("admin"))),
    ];
    for (what, req) in cases {
        let (status, body, took) = timed_login(req).await;
        assert_error(status, &body, 400);
        assert!(
            body["details"]
                .to_string()
                .contains("Missing authorization credentials"),
            "{what}: {body}"
        );
        assert!(took >= FAILURE_DELAY, "{what}: answered after {took:?}");
    }
}

#[tokio::test]
async fn v3_without_a_token_is_401_with_a_bearer_challenge() {
    let srv = TestServer::start_with_auth(&[]).await;
    for path in [
        "/api/v3/process",
        "/api/v3/process/x",
        "/api/v3/process/x/state",
        "/api/v3/metadata",
        "/api/v3/skills",
    ] {
        let res = srv.http.get(srv.url(path)).send().await.unwrap();
        assert_unauthorized(res, path).await;
    }
    // Mutations are refused too, before the body is looked at.
    let res = srv
        .http
        .post(srv.url("/api/v3/process"))
        .json(&common::testsrc_process("p"))
        .send()
        .await
        .unwrap();
    assert_unauthorized(res, "POST /api/v3/process").await;
    let res = srv
        .http
        .put(srv.url("/api/v3/metadata/k"))
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_unauthorized(res, "PUT /api/v3/metadata/k").await;

    // Nothing was created behind the guard.
    let (access, _) = login_pair(&srv).await;
    let (status, body) = decode(
        get_with(&srv, "/api/v3/process", Some(&access))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([]));
    let (status, body) = decode(
        get_with(&srv, "/api/v3/metadata", Some(&access))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::Null);
}

#[tokio::test]
async fn forged_and_misused_tokens_are_401() {
    let srv = TestServer::start_with_auth(&[]).await;
    let (access, refresh) = login_pair(&srv).await;
    let parts: Vec<&str> = access.split('.').collect();
    let (_, claims) = jwt_parts(&access);

    // Flip the first signature character: the signature bytes change for sure.
    let mut signature: Vec<char> = parts[2].chars().collect();
    signature[0] = if signature[0] == 'A' { 'B' } else { 'A' };
    let signature: String = signature.into_iter().collect();
    let tampered_signature = format!("{}.{}.{signature}", parts[0], parts[1]);

    // The payload changed (sub) under the original signature.
    let mut evil_claims = claims.clone();
    evil_claims["sub"] = json!("mallory");
    let evil_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil_claims).unwrap());
    let tampered_payload = format!("{}.{evil_payload}.{}", parts[0], parts[2]);

    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);

    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"a-completely-different-secret"),
    )
    .unwrap();
    assert_eq!(jwt_parts(&foreign).1, claims, "same claims, other key");

    let cases: Vec<(&str, String)> = vec![
        ("garbage", "garbage".into()),
        ("three garbage segments", "aaa.bbb.ccc".into()),
        ("tampered signature", tampered_signature),
        ("tampered payload", tampered_payload),
        ("alg none", alg_none),
        ("other secret", foreign),
        ("refresh token as access", refresh.clone()),
    ];
    for (what, token) in &cases {
        let res = get_with(&srv, "/api/v3/process", Some(token))
            .send()
            .await
            .unwrap();
        assert_unauthorized(res, what).await;
    }

    // Right token, wrong scheme.
    let res = srv
        .http
        .get(srv.url("/api/v3/process"))
        .header("Authorization", format!("Token {access}"))
        .send()
        .await
        .unwrap();
    assert_unauthorized(res, "wrong scheme").await;

    // The genuine token still works after all that.
    let res = get_with(&srv, "/api/v3/process", Some(&access))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn expired_access_token_is_401() {
    let srv = TestServer::start_with_auth(&[("STREAMCORE_AUTH_ACCESS_TOKEN_SECONDS", "1")]).await;
    let (access, _) = login_pair(&srv).await;
    let (_, claims) = jwt_parts(&access);
    assert_eq!(claims["exi"], json!(1));
    let exp = claims["exp"].as_u64().unwrap();

    let res = get_with(&srv, "/api/v3/process", Some(&access))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "fresh token refused");

    // Time semantics, not synchronisation: the token is valid up to and including second `exp`.
    let expired_at = UNIX_EPOCH + Duration::from_secs(exp + 1);
    if let Ok(wait) = expired_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait + Duration::from_millis(50)).await;
    }
    let res = get_with(&srv, "/api/v3/process", Some(&access))
        .send()
        .await
        .unwrap();
    assert_unauthorized(res, "expired access token").await;

    // /api treats the expired token as no token.
    let (status, about) = decode(get_with(&srv, "/api", Some(&access)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(about.get("id").is_none(), "{about}");
}

#[tokio::test]
async fn refresh_returns_only_a_new_access_token() {
    let srv = TestServer::start_with_auth(&[]).await;
    let (access, refresh) = login_pair(&srv).await;

    let (status, body) = decode(
        get_with(&srv, "/api/login/refresh", Some(&refresh))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, vec!["access_token"], "{body}");
    let fresh = body["access_token"].as_str().unwrap();
    let (header, claims) = jwt_parts(fresh);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(claims["usefor"], "access");
    assert_eq!(claims["exi"], json!(600));
    assert_ne!(claims["jti"], jwt_parts(&access).1["jti"]);

    let (status, body) = decode(
        get_with(&srv, "/api/v3/process", Some(fresh))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!([]));

    // The refresh token is reusable until it expires.
    let res = get_with(&srv, "/api/login/refresh", Some(&refresh))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn refresh_refuses_access_tokens_and_missing_tokens() {
    let srv = TestServer::start_with_auth(&[]).await;
    let (access, _) = login_pair(&srv).await;
    for (what, token) in [
        ("access token", Some(access.as_str())),
        ("no token", None),
        ("garbage", Some("not-a-jwt")),
    ] {
        let res = get_with(&srv, "/api/login/refresh", token)
            .send()
            .await
            .unwrap();
        assert_unauthorized(res, what).await;
    }
}

#[tokio::test]
async fn about_is_minimal_without_a_token_and_full_with_one() {
    let mut srv = TestServer::start_with_auth(&[]).await;

    for token in [None, Some("garbage")] {
        let (status, about) = decode(get_with(&srv, "/api", token).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{about}");
        assert_eq!(about["app"], "datarhei-core", "{about}");
        assert_eq!(about["auths"], json!(["localjwt"]), "{about}");
        assert_eq!(about["version"]["number"], "16.0.0", "{about}");
        let obj = about.as_object().unwrap();
        for key in ["id", "name", "created_at", "uptime_seconds"] {
            assert!(!obj.contains_key(key), "minimal about has {key}: {about}");
        }
    }

    srv.login().await;
    let (status, about) = srv.get("/api").await;
    assert_eq!(status, StatusCode::OK, "{about}");
    assert_eq!(about["app"], "datarhei-core");
    assert_eq!(about["auths"], json!(["localjwt"]));
    assert!(
        about["id"].as_str().is_some_and(|s| !s.is_empty()),
        "{about}"
    );
    assert!(
        about["name"].as_str().is_some_and(|s| !s.is_empty()),
        "{about}"
    );
    let created = about["created_at"].as_str().expect("created_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "created_at {created:?} is not RFC 3339"
    );
    assert!(about["uptime_seconds"].is_u64(), "{about}");
    let number = about["version"]["number"].as_str().unwrap();
    assert!(number.starts_with("16."), "{number}");
    let minor: u32 = number.split('.').nth(1).unwrap().parse().unwrap();
    assert!(minor >= 11, "restreamer-ui needs ^16.11.0, got {number}");

    // A refresh token does not count as access.
    let (_, refresh) = login_pair(&srv).await;
    let (_, about) = decode(get_with(&srv, "/api", Some(&refresh)).send().await.unwrap()).await;
    assert!(about.get("id").is_none(), "{about}");
}

#[tokio::test]
async fn unprotected_routes_need_no_token() {
    let srv = TestServer::start_with_auth(&[]).await;

    let res = srv.http.get(srv.url("/ping")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "pong");

    let res = srv
        .http
        .get(srv.url("/api/swagger/doc.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = res.json().await.expect("doc.json is JSON");
    assert!(
        doc["paths"].get("/api/v3/process").is_some(),
        "paths: {}",
        doc["paths"]
    );

    let res = srv
        .http
        .get(srv.url("/api/swagger/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = res.text().await.unwrap();
    assert!(html.to_lowercase().contains("<html"), "{html}");

    let res = srv.http.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(text.contains("streamcore_processes"), "{text}");

    // Login itself is reachable without a token (it is how one gets one).
    let res = srv
        .http
        .post(srv.url("/api/login"))
        .json(&json!({"username": USER, "password": PASS}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn auth_off_shows_full_about_and_has_no_login() {
    let srv = TestServer::start().await;

    let (status, about) = srv.get("/api").await;
    assert_eq!(status, StatusCode::OK, "{about}");
    assert_eq!(about["app"], "datarhei-core");
    assert_eq!(about["auths"], json!([]), "{about}");
    assert!(
        about["id"].as_str().is_some_and(|s| !s.is_empty()),
        "{about}"
    );
    assert!(about["name"].is_string(), "{about}");
    assert!(about["created_at"].is_string(), "{about}");
    assert!(
        about["version"]["number"]
            .as_str()
            .is_some_and(|n| n.starts_with("16.")),
        "{about}"
    );

    let (status, body) = srv
        .call(
            Method::POST,
            "/api/login",
            Some(json!({"username": USER, "password": PASS})),
        )
        .await;
    assert_error(status, &body, 404);
    assert_eq!(
        body,
        json!({"code": 404, "message": "Not Found", "details": ["Not Found"]})
    );
    let (status, body) = srv.get("/api/login/refresh").await;
    assert_error(status, &body, 404);

    let (status, body) = srv.get("/api/v3/process").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!([]));

    // A token of any kind is simply ignored.
    let res = get_with(&srv, "/api/v3/process", Some("garbage"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
