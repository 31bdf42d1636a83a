//! The example's JSON contract, against the real binary, and its front
//! door (hashed passwords, the login throttle).

use portcullis_tests::{ExampleProcess, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn login(app: &ExampleProcess, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(app.at("/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn token(app: &ExampleProcess, user: &str, password: &str) -> String {
    let resp = login(app, user, password).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    body["access_token"].as_str().unwrap().to_owned()
}

async fn get(app: &ExampleProcess, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = client().get(app.at(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn contract() {
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_jwt-api"), &[]);
    assert_eq!(
        login(&app, "alice", "nope").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "mallory", "wonderland").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let alice = token(&app, "alice", "wonderland").await;
    let bob = token(&app, "bob", "builder").await;

    let me: Value = get(&app, "/me", Some(&alice)).await.json().await.unwrap();
    assert_eq!(me, json!({"user": "alice"}));
    assert_eq!(
        get(&app, "/me", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/admin", Some(&alice)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/admin", Some(&bob)).await.status(),
        StatusCode::FORBIDDEN
    );

    let jwks: Value = get(&app, "/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], "jwt-api-1");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");

    // Bob cannot revoke; Alice (admin) revokes Bob: his token dies at once.
    let revoke = |t: &str| {
        client()
            .post(app.at("/admin/revoke"))
            .bearer_auth(t)
            .json(&json!({"user": "bob"}))
            .send()
    };
    assert_eq!(revoke(&bob).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(revoke(&alice).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get(&app, "/me", Some(&bob)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/me", Some(&alice)).await.status(),
        StatusCode::OK
    );
    let bob_again = token(&app, "bob", "builder").await;
    assert_eq!(
        get(&app, "/me", Some(&bob_again)).await.status(),
        StatusCode::OK,
        "a new login works"
    );
}

#[tokio::test]
async fn key_file_picks_the_algorithm_and_instances_share_keys() {
    let dir = std::env::temp_dir().join(format!("jwt-api-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rsa = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/rsa2048-private.pem"
    );
    let ed = dir.join("ed25519.pem");
    std::fs::write(
        &ed,
        portcullis::jwt::generate_pkcs8_pem(portcullis::jwt::Algorithm::EdDSA).unwrap(),
    )
    .unwrap();
    for (file, alg) in [
        (rsa.to_owned(), "RS256"),
        (ed.to_string_lossy().into_owned(), "EdDSA"),
    ] {
        let env = [
            ("JWT_KEY_FILE", file.as_str()),
            ("JWT_ISSUER", "https://shared.test"),
            ("JWT_AUDIENCE", "shared"),
        ];
        let a = ExampleProcess::start(env!("CARGO_BIN_EXE_jwt-api"), &env);
        let b = ExampleProcess::start(env!("CARGO_BIN_EXE_jwt-api"), &env);
        let jwks: Value = get(&a, "/.well-known/jwks.json", None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(jwks["keys"][0]["alg"], alg);
        let t = token(&a, "alice", "wonderland").await;
        assert_eq!(
            get(&b, "/me", Some(&t)).await.status(),
            StatusCode::OK,
            "{alg}: B accepts A's token"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Status, content type and body of a response.
async fn answer(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (status, ct, resp.text().await.unwrap())
}

#[tokio::test]
async fn an_unknown_user_gets_the_answer_of_a_wrong_password_and_failures_are_throttled() {
    let app = ExampleProcess::start(env!("CARGO_BIN_EXE_jwt-api"), &[]);
    let wrong = answer(login(&app, "alice", "nope").await).await;
    let unknown = answer(login(&app, "mallory", "wonderland").await).await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.1, "application/problem+json");
    assert_eq!(
        wrong, unknown,
        "an unknown user is told what a known one is"
    );

    // Bob's wrong passwords: 5 free, then 429 with Retry-After before the
    // password is even checked (a late 6th try may still pass if the first
    // block of a second has run out: then the 7th is refused).
    let mut blocked = None;
    for attempt in 1..=8 {
        let resp = login(&app, "bob", &format!("guess {attempt}")).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            blocked = Some((attempt, resp));
            break;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let (attempt, resp) = blocked.expect("throttled after 5 failures");
    assert!(
        attempt >= 6,
        "blocked at attempt {attempt}: before the free ones ran out"
    );
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    // Another account from the same address is not blocked by bob's.
    token(&app, "alice", "wonderland").await;
}
