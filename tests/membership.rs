//! Membership end to end (issue 3): Plenary started in-process, signed into through the real
//! OAuth flow against a test double of a Mastodon instance (`support/mastodon.rs`), driven by a
//! cookie-keeping HTTP client that follows redirects by hand (`support/membership_env.rs`), with
//! grants used on the real `/rtc` WebSocket and the SQLite store read back through
//! `plenary::membership::store` after every refusal ("nothing half-written").
//!
//! Sections: sign-in, OAuth attacks, sessions, grants, rooms, invitations, audit and logs.
//! Every wait is bounded (`support::membership_env::T`, and `TEST_LIMIT` per test).
//! Set `MEMBERSHIP_TEST_LOG=1` to see the server's log on stderr.

#[path = "support/mastodon.rs"]
mod mastodon;
#[path = "support/membership_env.rs"]
mod membership_env;

use std::future::Future;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mastodon::{Account, MastodonDouble, Role, Switches};
use membership_env::{
    captured_log, decode_unverified, instance_config, sign_eddsa, Browser, Env, INSTANCE,
};
use plenary::config::{LimitedPolicy, OpenRooms};
use plenary::grant::unix_now;
use plenary::membership::pending::PendingSignIn;
use plenary::membership::store::{self, Invitation};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(45);

async fn bounded(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("the test did not finish within {TEST_LIMIT:?}");
    }
}

fn alice() -> Account {
    Account::new("101", "alice")
}

fn bob() -> Account {
    Account::new("102", "bob")
}

/// A Mastodon 4.3 double with alice, and Plenary against it.
async fn env_with(tweak: impl FnOnce(&mut plenary::config::MembershipConfig)) -> Env {
    Env::with(Switches::mastodon_4_3(), alice(), tweak).await
}

async fn env() -> Env {
    env_with(|_| {}).await
}

fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in:\n{haystack}"
    );
}

/// Asserts a join was refused with `invalid_grant` and a message containing `why`.
fn assert_invalid_grant(answer: &Value, why: &str) {
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "invalid_grant", "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "expected {why:?} in {answer}");
}

fn assert_welcome(answer: &Value) -> &Value {
    assert_eq!(answer["type"], "welcome", "{answer}");
    &answer["me"]
}

use plenary::membership::invitations::month;

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value in a `Set-Cookie` line.
fn cookie_value(set_cookie: &str) -> String {
    let first = set_cookie.split(';').next().unwrap();
    first.split_once('=').unwrap().1.to_string()
}

async fn me(b: &Browser) -> (StatusCode, Value) {
    b.api(Method::GET, "/api/me", None).await
}

// ==== sign-in ==================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_signs_in_with_mastodon_4_3() {
    bounded(async {
        let env = env().await;
        let b = env.browser();
        let flow = b.sign_in(INSTANCE, None).await;

        // Hop 1: Plenary → instance, with PKCE S256, `profile`, a fresh state bound to a cookie.
        let login = &flow.login;
        assert_eq!(login.status, StatusCode::SEE_OTHER, "{login:#?}");
        let to = login.location.as_deref().unwrap();
        assert!(
            to.starts_with(&format!("{}/oauth/authorize?", env.double.base_url())),
            "{to}"
        );
        let redirect_uri = format!("{}/auth/{INSTANCE}/callback", env.base);
        assert_eq!(login.location_param("redirect_uri").unwrap(), redirect_uri);
        assert_eq!(login.location_param("response_type").unwrap(), "code");
        assert_eq!(login.location_param("scope").unwrap(), "profile");
        assert_eq!(
            login.location_param("code_challenge_method").unwrap(),
            "S256"
        );
        assert_eq!(login.location_param("code_challenge").unwrap().len(), 43);
        let state = login.location_param("state").unwrap();
        assert!(state.len() >= 43, "a 256-bit state: {state}");
        // The cookie holds a random value whose hash is sealed inside the state.
        let state_cookie = login.set_cookie("plenary_oauth_state").unwrap();
        let binding = cookie_value(state_cookie);
        assert_eq!(binding.len(), 43, "{state_cookie}");
        assert!(!state.contains(&binding));
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/auth", "Max-Age=600"] {
            assert_contains(state_cookie, flag);
        }
        assert!(
            !state_cookie.contains("Secure"),
            "served over http: {state_cookie}"
        );
        assert_eq!(
            env.double.registered_redirect_uris(),
            vec![redirect_uri.clone()]
        );
        assert!(env.double.registered_scopes()[0].contains(&"profile".to_string()));

        // Hop 2: the instance approves and sends the browser back with code and state.
        let authorize = flow.authorize.as_ref().unwrap();
        assert_eq!(authorize.status, StatusCode::FOUND, "{authorize:#?}");
        assert!(authorize
            .location
            .as_deref()
            .unwrap()
            .starts_with(&redirect_uri));
        assert_eq!(authorize.location_param("state").unwrap(), state);

        // Hop 3: Plenary sets an opaque session cookie and sends the browser home.
        let cb = flow.expect_success();
        assert_eq!(
            cb.location.as_deref(),
            Some(format!("{}/", env.base).as_str())
        );
        let session = cb.set_cookie("plenary_session").unwrap();
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
            assert_contains(session, flag);
        }
        assert_contains(cb.set_cookie("plenary_oauth_state").unwrap(), "Max-Age=0");
        let cookie = b.cookie("/", "plenary_session").unwrap();
        let tokens = env.double.live_user_tokens();
        assert_eq!(tokens.len(), 1);
        assert_ne!(
            cookie, tokens[0],
            "the instance token never reaches the browser"
        );
        for hop in [&flow.login, cb] {
            assert!(
                !hop.body.contains(&tokens[0])
                    && !hop
                        .location
                        .clone()
                        .unwrap_or_default()
                        .contains(&tokens[0])
            );
        }

        let (status, v) = me(&b).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["handle"], "@alice@social.example");
        assert_eq!(v["instance"], INSTANCE);
        assert_eq!(v["is_host"], false);
        assert_eq!(v["listen_only"], false);
        assert!(v.get("access_token").is_none());

        // The store: one session (by hash), the state remembered as used, the member
        // recorded.
        assert_eq!(env.count("sessions"), 1);
        assert_eq!(env.count("used_oauth_states"), 1);
        let s = env
            .store()
            .run_sync(|c| store::session(c, &cookie))
            .unwrap()
            .expect("the cookie opens a session");
        assert_ne!(s.id_hash, cookie);
        assert_eq!(
            env.store()
                .run_sync(|c| store::member_status(c, INSTANCE, "101"))
                .unwrap()
                .map(|m| m.0),
            Some(true)
        );
        let sign_ins = env.audit_of("sign_in");
        assert_eq!(sign_ins.len(), 1);
        assert_eq!(sign_ins[0].actor, "@alice@social.example");

        // A second sign-in reuses the app registration.
        env.browser().sign_in(INSTANCE, None).await.expect_success();
        assert_eq!(env.double.counters().apps_registered, 1);
        assert_eq!(env.count("sessions"), 2);

        // The sign-in page lists the instance.
        let page = b.get("/login").await;
        assert_eq!(page.status, StatusCode::OK);
        assert_contains(&page.body, "/auth/coop/login");
        assert_contains(&page.body, "Sign in with Social Example");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sign_ins_register_one_app() {
    bounded(async {
        let env = env().await;
        // Several members open the sign-in page at once right after the server started, and
        // the instance takes a moment to answer.
        env.double
            .switches(|s| s.delay = Duration::from_millis(150));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let b = env.browser();
            tasks.push(tokio::spawn(async move {
                let login = b.begin(INSTANCE, None).await;
                (login, b)
            }));
        }
        let mut started = Vec::new();
        for t in tasks {
            started.push(t.await.unwrap());
        }
        assert_eq!(
            env.double.counters().apps_registered,
            1,
            "one app per instance"
        );
        for (login, b) in started {
            assert!(login.is_redirect(), "{login:#?}");
            let authorize = b.get(login.location.as_deref().unwrap()).await;
            let cb = b.get(authorize.location.as_deref().unwrap()).await;
            assert!(cb.set_cookie("plenary_session").is_some(), "{cb:#?}");
        }
        assert_eq!(env.count("sessions"), 4);
        assert_eq!(env.count("apps"), 1);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_by_role_name_id_permission_bits_and_host_list() {
    bounded(async {
        let env = env_with(|m| {
            let i = &mut m.instances[0];
            i.host_roles = vec!["Moderator".into()];
            i.host_role_ids = vec!["7".into()];
            i.host_permissions = 0x400; // manage_users
            m.hosts = vec!["@Dana@Social.Example".into()];
        })
        .await;
        let d = &env.double;
        d.add_account(Account::new("201", "mod").with_role(Role::new("3", "moderator", 0x10000)));
        d.add_account(Account::new("202", "steward").with_role(Role::new("7", "Steward", 0)));
        d.add_account(Account::new("203", "admin").with_role(Role::new(
            "9",
            "Ops",
            0x400 | 0x10000,
        )));
        d.add_account(Account::new("204", "dana"));
        d.add_account(Account::new("205", "erin").with_role(Role::new("12", "Helper", 0x10)));
        for (id, host) in [
            ("101", false),
            ("201", true),
            ("202", true),
            ("203", true),
            ("204", true),
            ("205", false),
        ] {
            let b = env.signed_in_as(id).await;
            let (_, v) = me(&b).await;
            assert_eq!(v["is_host"], host, "account {id}: {v}");
            let grant = b.must_grant("gm").await;
            let (_, claims) = decode_unverified(&grant);
            assert_eq!(claims["permissions"]["is_host"], host, "{claims}");
            assert_eq!(
                claims["role"],
                if host { "host" } else { "member" },
                "{claims}"
            );
        }
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gotosocial_role_name_makes_a_host() {
    bounded(async {
        let admin = Account::new("01HGTSADMIN", "root").with_role(Role::new("", "Admin", 0));
        let env = Env::with(Switches::gotosocial(), admin, |_| {}).await;
        env.double.add_account(Account::new("01HGTSUSER", "pat"));
        let flow = env.browser().sign_in(INSTANCE, None).await;
        // No discovery: the classic endpoints and `read:accounts`.
        assert_eq!(flow.login.location_param("scope").unwrap(), "read:accounts");
        flow.expect_success();
        let b = env.signed_in_as("01HGTSADMIN").await;
        let (_, v) = me(&b).await;
        assert_eq!(v["handle"], "@root@gts.example");
        assert_eq!(
            v["is_host"], true,
            "role {{name: \"admin\"}} matches \"Admin\""
        );
        let b = env.signed_in_as("01HGTSUSER").await;
        let (_, v) = me(&b).await;
        assert_eq!(v["is_host"], false, "role {{name: \"user\"}}");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn akkoma_staff_flags_make_a_host() {
    bounded(async {
        let mut moderator = Account::new("AbCdEf123", "carol");
        moderator.pleroma_moderator = true;
        let env = Env::with(Switches::akkoma(), moderator, |_| {}).await;
        env.double.add_account(Account::new("AbCdEf456", "dave"));
        let b = env.signed_in_as("AbCdEf123").await;
        let (_, v) = me(&b).await;
        // No /api/v2/instance: the domain comes from v1's `uri` (a URL on Akkoma).
        assert_eq!(v["handle"], "@carol@akkoma.example");
        assert_eq!(v["is_host"], true);
        let b = env.signed_in_as("AbCdEf456").await;
        assert_eq!(me(&b).await.1["is_host"], false);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mastodon_4_0_without_discovery_pkce_or_profile() {
    bounded(async {
        let env = Env::with(Switches::mastodon_4_0(), alice(), |_| {}).await;
        let b = env.browser();
        let flow = b.sign_in(INSTANCE, None).await;
        assert_eq!(flow.login.location_param("scope").unwrap(), "read:accounts");
        assert!(flow
            .login
            .location
            .as_deref()
            .unwrap()
            .starts_with(&format!("{}/oauth/authorize?", env.double.base_url())));
        flow.expect_success();
        assert_eq!(env.double.counters().discovery_requests, 1);
        assert_eq!(
            env.double.registered_scopes(),
            vec![vec!["read:accounts".to_string()]]
        );
        assert_eq!(me(&b).await.1["handle"], "@alice@social.example");

        // Older still: no /api/v2/instance, and the instance now calls itself by another
        // domain. Handles keep the configured one: what an instance says is not trusted.
        env.double.switches(|s| {
            s.v2_instance = false;
            s.domain = "older.example".into();
        });
        env.double.add_account(bob());
        let b = env.signed_in_as("102").await;
        assert_eq!(me(&b).await.1["handle"], "@bob@social.example");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_account_is_refused_with_a_page_that_says_why() {
    bounded(async {
        let mut suspended = alice();
        suspended.suspended = true;
        let env = Env::with(Switches::mastodon_4_3(), suspended, |_| {}).await;
        let flow = env.browser().sign_in(INSTANCE, None).await;
        let page = flow.expect_refused(StatusCode::FORBIDDEN);
        assert_contains(&page.body, "Social Example says this account is not active");
        assert_contains(&page.body, "suspended");
        assert_contains(&page.body, "href=\"/login\"");
        assert_contains(page.set_cookie("plenary_oauth_state").unwrap(), "Max-Age=0");
        assert_eq!(env.count("sessions"), 0);
        assert_eq!(env.count("members"), 0);
        assert_eq!(env.count("used_oauth_states"), 1, "its state is used up");
        let refusals = env.audit_of("sign_in_refused");
        assert_eq!(refusals.len(), 1);
        assert_contains(&refusals[0].detail, "account_not_active");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_instance_gets_a_429_page() {
    bounded(async {
        let env = env().await;
        // Rate-limited before anything: registering the app is refused.
        env.double.switches(|s| s.rate_limited = true);
        let b = env.browser();
        let login = b.begin(INSTANCE, None).await;
        assert_eq!(login.status, StatusCode::TOO_MANY_REQUESTS, "{login:#?}");
        assert_contains(&login.body, "rate-limited");
        assert!(login.set_cookie("plenary_oauth_state").is_none());
        assert_eq!(env.count("apps"), 0);

        // Rate-limited between the authorization and the callback.
        env.double.switches(|s| s.rate_limited = false);
        let login = b.begin(INSTANCE, None).await;
        let authorize = b.get(login.location.as_deref().unwrap()).await;
        env.double.switches(|s| s.rate_limited = true);
        let cb = b.get(authorize.location.as_deref().unwrap()).await;
        assert_eq!(cb.status, StatusCode::TOO_MANY_REQUESTS, "{cb:#?}");
        assert_contains(&cb.body, "busy (rate-limited); please try again");
        assert!(cb.set_cookie("plenary_session").is_none());
        assert_eq!(env.count("sessions"), 0);

        // Once the limit is over, signing in again works, still with `profile`: a discovery
        // that was rate-limited is not taken for an instance without discovery.
        env.double.switches(|s| s.rate_limited = false);
        let flow = b.sign_in(INSTANCE, None).await;
        flow.expect_success();
        assert_eq!(flow.login.location_param("scope").unwrap(), "profile");
        assert!(env.double.counters().rate_limited >= 2);

        // Only the account API is limited: the code was exchanged, the sign-in fails with a
        // 429, and the token Plenary got is given back rather than left behind.
        env.double.switches(|s| {
            s.rate_limited_paths = vec!["/api/v1/accounts/verify_credentials".into()]
        });
        let live = env.double.live_user_tokens().len();
        let cb = env.browser().sign_in(INSTANCE, None).await;
        cb.expect_refused(StatusCode::TOO_MANY_REQUESTS);
        eventually("the failed sign-in's token is revoked", || {
            env.double.live_user_tokens().len() == live
        })
        .await;
        assert_eq!(env.count("sessions"), 1);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_instance_signs_in_without_blocking_the_server() {
    bounded(async {
        let env = env().await;
        env.double
            .switches(|s| s.delay = Duration::from_millis(600));
        let b = env.browser();
        let login = b.begin(INSTANCE, None).await;
        let authorize = b.get(login.location.as_deref().unwrap()).await;
        let callback = authorize.location.clone().unwrap();
        let started = Instant::now();
        let sign_in = tokio::spawn(async move {
            let hop = b.get(&callback).await;
            (hop, b)
        });
        // While Plenary waits on the instance (code, credentials: ≥ 1.2 s), it still answers
        // others.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let other = env.browser();
        assert_eq!(other.get("/healthz").await.status, StatusCode::OK);
        assert_eq!(other.get("/login").await.status, StatusCode::OK);
        assert!(
            !sign_in.is_finished(),
            "answered before the slow sign-in finished"
        );
        let (hop, b) = sign_in.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(1200));
        assert!(
            hop.is_redirect() && hop.set_cookie("plenary_session").is_some(),
            "{hop:#?}"
        );
        assert_eq!(me(&b).await.0, StatusCode::OK);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_that_does_not_answer_in_time_gets_a_502_page() {
    bounded(async {
        let env = env().await;
        let b = env.browser();
        let login = b.begin(INSTANCE, None).await;
        let authorize = b.get(login.location.as_deref().unwrap()).await;
        env.double.switches(|s| s.delay = Duration::from_secs(12));
        let started = Instant::now();
        let cb = b.get(authorize.location.as_deref().unwrap()).await;
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "bounded by Plenary's timeout"
        );
        assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "{cb:#?}");
        assert_contains(&cb.body, "did not answer in time");
        assert_eq!(env.count("sessions"), 0);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_accounts_follow_the_configured_policy() {
    bounded(async {
        for (policy, outcome) in [
            (LimitedPolicy::ListenOnly, Some(false)),
            (LimitedPolicy::Allow, Some(true)),
            (LimitedPolicy::Deny, None),
        ] {
            let mut limited = alice();
            limited.limited = true;
            let env = Env::with(Switches::mastodon_4_3(), limited, |m| {
                m.limited_accounts = policy;
            })
            .await;
            let b = env.browser();
            let flow = b.sign_in(INSTANCE, None).await;
            match outcome {
                Some(can_publish) => {
                    flow.expect_success();
                    let (_, v) = me(&b).await;
                    assert_eq!(v["listen_only"], !can_publish, "{policy:?}");
                    let (_, claims) = decode_unverified(&b.must_grant("gm").await);
                    assert_eq!(
                        claims["permissions"]["can_publish"], can_publish,
                        "{policy:?}"
                    );
                    assert_eq!(claims["permissions"]["can_subscribe"], true);
                }
                None => {
                    let page = flow.expect_refused(StatusCode::FORBIDDEN);
                    assert_contains(&page.body, "limited by its instance");
                    assert_eq!(env.count("sessions"), 0);
                    assert_eq!(env.count("members"), 0);
                    // The token Plenary got is given back.
                    eventually("the token is revoked", || {
                        env.double.counters().revocations == 1
                    })
                    .await;
                    assert!(env.double.live_user_tokens().is_empty());
                }
            }
            env.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_list_refuses_case_insensitively() {
    bounded(async {
        let env = env_with(|m| m.deny = vec!["@ALICE@Social.Example".into()]).await;
        let flow = env.browser().sign_in(INSTANCE, None).await;
        let page = flow.expect_refused(StatusCode::FORBIDDEN);
        assert_contains(&page.body, "deny list");
        assert_eq!(env.count("sessions"), 0);
        eventually("the token is revoked", || {
            env.double.live_user_tokens().is_empty()
        })
        .await;
        let refusals = env.audit_of("sign_in_refused");
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0].actor, "@alice@social.example");
        assert_contains(&refusals[0].detail, "deny list");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_whose_accounts_are_not_members_is_refused() {
    bounded(async {
        let env = env_with(|m| m.instances[0].members = false).await;
        let page = env
            .browser()
            .sign_in(INSTANCE, None)
            .await
            .expect_refused(StatusCode::FORBIDDEN)
            .clone();
        assert_contains(&page.body, "do not make members");
        assert_eq!(env.count("sessions"), 0);
        // Unknown instance ids are a 404 page.
        let hop = env.browser().begin("nowhere", None).await;
        assert_eq!(hop.status, StatusCode::NOT_FOUND);
        assert_contains(&hop.body, "no instance");
        env.stop().await;
    })
    .await;
}

// ==== OAuth attacks ============================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_state_is_refused() {
    bounded(async {
        let env = env().await;
        let b = env.browser();
        let login = b.begin(INSTANCE, None).await;
        let authorize = b.get(login.location.as_deref().unwrap()).await;
        let callback = url::Url::parse(authorize.location.as_deref().unwrap()).unwrap();
        let code = authorize.location_param("code").unwrap();

        // No state parameter.
        let hop = b
            .get(&format!(
                "{}/auth/{INSTANCE}/callback?code={code}",
                env.base
            ))
            .await;
        assert_eq!(hop.status, StatusCode::BAD_REQUEST, "{hop:#?}");
        assert_contains(&hop.body, "please sign in again");
        // The right state, but from a browser without the state cookie (login CSRF).
        let hop = env.browser().get(callback.as_str()).await;
        assert_eq!(hop.status, StatusCode::BAD_REQUEST, "{hop:#?}");
        assert_contains(&hop.body, "not started from this browser");

        assert_eq!(
            env.double.counters().codes_exchanged,
            0,
            "no code was exchanged"
        );
        assert_eq!(env.count("sessions"), 0);
        // The state is not used up: the real browser can still finish.
        assert_eq!(env.count("used_oauth_states"), 0);
        let hop = b.get(callback.as_str()).await;
        assert!(hop.set_cookie("plenary_session").is_some(), "{hop:#?}");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_state_is_refused() {
    bounded(async {
        let env = env().await;
        let b = env.browser();
        let flow = b.sign_in(INSTANCE, None).await;
        flow.expect_success();
        let callback = flow.authorize.as_ref().unwrap().location.clone().unwrap();
        let binding = cookie_value(flow.login.set_cookie("plenary_oauth_state").unwrap());

        // Same browser: its state cookie was cleared.
        let hop = b.get(&callback).await;
        assert_eq!(hop.status, StatusCode::BAD_REQUEST, "{hop:#?}");
        // Someone holding the state cookie too: the state was used.
        let other = env.browser();
        let hop = other
            .get_with(
                &callback,
                &[("cookie", &format!("plenary_oauth_state={binding}"))],
            )
            .await;
        assert_eq!(hop.status, StatusCode::BAD_REQUEST, "{hop:#?}");
        assert_contains(&hop.body, "expired or was already used");
        assert!(hop.set_cookie("plenary_session").is_none());

        assert_eq!(env.count("sessions"), 1);
        assert_eq!(env.double.counters().codes_exchanged, 1);
        assert!(env
            .audit_of("sign_in_refused")
            .iter()
            .any(|e| e.detail.contains("state_unknown_or_used")));
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_state_is_refused() {
    bounded(async {
        let env = env().await;
        let b = env.browser();
        let login = b.begin(INSTANCE, None).await;
        let authorize = b.get(login.location.as_deref().unwrap()).await;
        // Eleven minutes later... (the same sign-in, sealed again with the server's secret
        // as an operator could, with an expiry in the past).
        let sealing = plenary::membership::sealing::load_or_create(&env.keys_dir()).unwrap();
        let state = authorize.location_param("state").unwrap();
        let mut pending = PendingSignIn::open(&sealing, &state).expect("the state opens");
        pending.expires_at = unix_now() as i64 - 60;
        let mut callback = url::Url::parse(authorize.location.as_deref().unwrap()).unwrap();
        let code = authorize.location_param("code").unwrap();
        callback
            .query_pairs_mut()
            .clear()
            .append_pair("code", &code)
            .append_pair("state", &pending.seal(&sealing));
        let binding = cookie_value(login.set_cookie("plenary_oauth_state").unwrap());
        let with_cookie = [("cookie", format!("plenary_oauth_state={binding}"))];
        let with_cookie: Vec<(&str, &str)> =
            with_cookie.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let hop = b.get(callback.as_str()).await;
        assert_eq!(hop.status, StatusCode::BAD_REQUEST, "{hop:#?}");
        assert_contains(&hop.body, "expired");
        assert_eq!(env.double.counters().codes_exchanged, 0);
        assert_eq!(env.count("sessions"), 0);
        // A state this server did not seal is refused as such.
        callback
            .query_pairs_mut()
            .clear()
            .append_pair("code", &code)
            .append_pair("state", &format!("x{state}"));
        let hop = env
            .browser()
            .get_with(callback.as_str(), &with_cookie)
            .await;
        assert_eq!(hop.status, StatusCode::BAD_REQUEST, "{hop:#?}");
        assert_contains(&hop.body, "not issued by this server");
        assert_eq!(env.double.counters().codes_exchanged, 0);
        assert!(env
            .audit_of("sign_in_refused")
            .iter()
            .any(|e| e.detail.contains("state_expired")));
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_from_another_instance_is_refused() {
    bounded(async {
        let other = MastodonDouble::start(Switches::mastodon_4_3(), Account::new("9", "zed")).await;
        let mut other_config = instance_config("other", &other);
        other_config.domain = "other.example".into();
        let env = env_with(|m| m.instances.push(other_config)).await;
        let b = env.browser();
        let login = b.begin(INSTANCE, None).await;
        let authorize = b.get(login.location.as_deref().unwrap()).await;
        let code = authorize.location_param("code").unwrap();
        let state = authorize.location_param("state").unwrap();
        let hop = b
            .get(&format!(
                "{}/auth/other/callback?code={code}&state={state}",
                env.base
            ))
            .await;
        assert_eq!(hop.status, StatusCode::BAD_REQUEST, "{hop:#?}");
        assert_contains(&hop.body, "started for another instance");
        assert_eq!(env.double.counters().codes_exchanged, 0);
        assert_eq!(other.counters().codes_exchanged, 0);
        assert_eq!(
            other.counters().token_refusals,
            0,
            "nothing was sent to the other instance"
        );
        assert_eq!(env.count("sessions"), 0);
        assert!(env
            .audit_of("sign_in_refused")
            .iter()
            .any(|e| e.detail.contains("state_for_other_instance")));
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_redirect_uri_is_refused_by_the_instance() {
    bounded(async {
        let env = env().await;
        let b = env.browser();
        let login = b.begin(INSTANCE, None).await;
        let honest = url::Url::parse(login.location.as_deref().unwrap()).unwrap();
        let registered = format!("{}/auth/{INSTANCE}/callback", env.base);
        for evil in [
            "http://evil.example/steal".to_string(),
            format!("{registered}?next=http://evil.example"),
            format!("{registered}/../../evil"),
            format!("{}/auth/other/callback", env.base),
        ] {
            let mut u = honest.clone();
            let pairs: Vec<(String, String)> = honest
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "redirect_uri" {
                        evil.clone()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
            let hop = b.get(u.as_str()).await;
            assert_eq!(hop.status, StatusCode::BAD_REQUEST, "{evil}: {hop:#?}");
            assert!(hop.location.is_none(), "no redirect anywhere: {hop:#?}");
        }
        assert_eq!(env.double.counters().authorizations, 0);
        assert_eq!(env.double.counters().authorizations_refused, 4);

        // The redirect URI comes from the configuration, never from the Host header.
        let hop = b
            .get_with(
                &format!("/auth/{INSTANCE}/login"),
                &[
                    ("host", "evil.example"),
                    ("x-forwarded-host", "evil.example"),
                ],
            )
            .await;
        assert_eq!(hop.location_param("redirect_uri").unwrap(), registered);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_path_must_be_local() {
    bounded(async {
        let env = env().await;
        let b = env.browser();
        for evil in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "http:evil.example",
            "javascript:alert(1)",
            "%2F%2Fevil.example",
            "/\r\nSet-Cookie: plenary_session=x",
            "/\tevil",
            " //evil.example",
        ] {
            let hop = b.begin(INSTANCE, Some(evil)).await;
            assert_eq!(hop.status, StatusCode::BAD_REQUEST, "{evil:?}: {hop:#?}");
            assert_contains(&hop.body, "must be a path on this site");
            assert!(
                hop.location.is_none() && hop.set_cookies.is_empty(),
                "{hop:#?}"
            );
        }
        assert_eq!(env.count("used_oauth_states"), 0);
        let flow = b.sign_in(INSTANCE, Some("/room/gm?from=login")).await;
        let cb = flow.expect_success();
        assert_eq!(
            cb.location.as_deref(),
            Some(format!("{}/room/gm?from=login", env.base).as_str())
        );
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_https_cookies_are_secure_and_links_use_the_public_url() {
    bounded(async {
        let env = env_with(|m| m.public_url = "https://meet.example".into()).await;
        let b = env.browser();
        let login = b.begin(INSTANCE, None).await;
        assert_eq!(
            login.location_param("redirect_uri").unwrap(),
            "https://meet.example/auth/coop/callback"
        );
        assert_contains(login.set_cookie("plenary_oauth_state").unwrap(), "; Secure");
        assert_eq!(
            env.double.registered_redirect_uris(),
            vec!["https://meet.example/auth/coop/callback".to_string()]
        );
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_authorization_and_bad_codes_are_refused() {
    bounded(async {
        let env = env().await;
        env.double.switches(|s| s.deny_authorization = true);
        let flow = env.browser().sign_in(INSTANCE, None).await;
        let page = flow.expect_refused(StatusCode::FORBIDDEN);
        assert_contains(&page.body, "did not authorize");
        env.double.switches(|s| s.deny_authorization = false);

        // A made-up code with a real state: the instance refuses it.
        let b = env.browser();
        let login = b.begin(INSTANCE, None).await;
        let state = login.location_param("state").unwrap();
        let hop = b
            .get(&format!(
                "/auth/{INSTANCE}/callback?code=made-up&state={state}"
            ))
            .await;
        assert_eq!(hop.status, StatusCode::FORBIDDEN, "{hop:#?}");
        assert_contains(&hop.body, "authorization code was not accepted");
        assert_eq!(env.double.counters().token_refusals, 1);
        assert_eq!(env.count("sessions"), 0);
        env.stop().await;
    })
    .await;
}

// ==== sessions =================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_instance_token() {
    bounded(async {
        let env = env().await;
        let b = env.signed_in_as("101").await;
        let token = env.double.live_user_tokens().pop().unwrap();
        let (status, v) = b.api(Method::POST, "/auth/logout", None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(env.double.revoked(), vec![token]);
        assert!(env.double.live_user_tokens().is_empty());
        assert_eq!(b.cookie("/", "plenary_session"), None, "cookie cleared");
        assert_eq!(me(&b).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(env.count("sessions"), 0);
        assert_eq!(env.audit_of("sign_out").len(), 1);

        // The instance is unreachable for revocation (rate-limited): signing out still works.
        let b = env.signed_in_as("101").await;
        env.double.switches(|s| s.rate_limited = true);
        let (status, v) = b.api(Method::POST, "/auth/logout", None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(me(&b).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(env.count("sessions"), 0);
        // Signing out without a session is harmless.
        assert_eq!(
            env.browser()
                .api(Method::POST, "/auth/logout", None)
                .await
                .0,
            StatusCode::OK
        );
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_or_too_old() {
    bounded(async {
        let env = env().await;
        for column in ["last_seen", "created_at"] {
            let b = env.signed_in_as("101").await;
            assert_eq!(me(&b).await.0, StatusCode::OK);
            let cookie = b.cookie("/", "plenary_session").unwrap();
            let hash = plenary::secret::hash_secret(&cookie);
            let long_ago = unix_now() as i64 - 13 * 3600;
            env.store()
                .run_sync(|c| {
                    Ok(c.execute(
                        &format!("UPDATE sessions SET {column} = ?1 WHERE id_hash = ?2"),
                        rusqlite::params![long_ago, hash],
                    )?)
                })
                .unwrap();
            let (status, v) = me(&b).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{column}: {v}");
            assert_eq!(v["error"], "please sign in");
            assert_eq!(
                env.count("sessions"),
                0,
                "{column}: the stale session is deleted"
            );
        }
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_checked_again_when_a_grant_is_minted() {
    bounded(async {
        let env = env_with(|m| m.recheck_secs = 0).await;
        let b = env.signed_in_as("101").await;
        b.must_grant("gm").await;
        let verified = env.double.counters().verify_credentials;
        env.double.account("101", |a| a.suspended = true);
        let (status, v) = b.grant("gm").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(v["error"].as_str().unwrap(), "no longer active");
        assert_eq!(env.double.counters().verify_credentials, verified + 1);
        assert_eq!(env.count("sessions"), 0);
        assert_eq!(
            env.store()
                .run_sync(|c| store::member_status(c, INSTANCE, "101"))
                .unwrap()
                .map(|m| m.0),
            Some(false)
        );
        assert_eq!(env.audit_of("membership_lost").len(), 1);
        assert_eq!(me(&b).await.0, StatusCode::UNAUTHORIZED);
        // Grants refused: only the first one was audited.
        assert_eq!(env.audit_of("grant").len(), 1);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_limits_changed_at_the_instance_apply_at_the_next_grant() {
    bounded(async {
        let env = env_with(|m| m.recheck_secs = 0).await;
        env.double.add_account(host());
        let hana = env.signed_in_as("900").await;
        let (_, claims) = decode_unverified(&hana.must_grant("gm").await);
        assert_eq!(claims["permissions"]["is_host"], true);

        // The instance takes the moderator role away and silences the account.
        env.double.account("900", |a| {
            a.role = Role::everyone();
            a.limited = true;
        });
        let (status, v) = hana.set_mode("gm", "locked").await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "no host powers any more: {v}"
        );
        let (_, claims) = decode_unverified(&hana.must_grant("gm").await);
        assert_eq!(claims["role"], "member", "{claims}");
        assert_eq!(claims["permissions"]["is_host"], false, "{claims}");
        assert_eq!(
            claims["permissions"]["can_publish"], false,
            "listen only: {claims}"
        );
        let (_, v) = me(&hana).await;
        assert_eq!(
            (v["is_host"].clone(), v["listen_only"].clone()),
            (json!(false), json!(true))
        );
        assert_eq!(
            env.store().run_sync(|c| store::room_mode(c, "gm")).unwrap(),
            Some(store::RoomMode::MembersAndGuests)
        );

        // And gives it back.
        env.double.account("900", |a| {
            a.role = Role::new("3", "Moderator", 0);
            a.limited = false;
        });
        let (_, claims) = decode_unverified(&hana.must_grant("gm").await);
        assert_eq!(claims["permissions"]["is_host"], true, "{claims}");
        assert_eq!(claims["permissions"]["can_publish"], true, "{claims}");
        env.stop().await;
    })
    .await;
}

// ==== grants ===================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_grant_joins_once_and_a_replay_is_refused() {
    bounded(async {
        let env = env().await;
        let b = env.signed_in_as("101").await;
        let (status, v) = b.grant("gm").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["room"], "gm");
        assert_eq!(v["ws_url"], "/rtc");
        let grant = v["grant"].as_str().unwrap().to_string();
        let (header, claims) = decode_unverified(&grant);
        let (kid, _) = env.signing_key();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], kid.as_str());
        assert_eq!(claims["iss"], "plenary");
        assert_eq!(claims["aud"], "plenary");
        assert_eq!(claims["room"], "gm");
        assert_eq!(claims["sub"], "@alice@social.example");
        assert_eq!(claims["role"], "member");
        let ttl = claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap();
        assert!(ttl <= 120, "short-lived: {ttl}");

        let me = assert_welcome(&env.join(&grant, "gm").await).clone();
        assert_eq!(me["identity"], "@alice@social.example");
        assert_eq!(me["role"], "member");
        assert_eq!(env.count("used_jti"), 1);

        let replay = env.join(&grant, "gm").await;
        assert_invalid_grant(&replay, "already used");
        assert_eq!(env.count("used_jti"), 1);

        let grants = env.audit_of("grant");
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].room, "gm");
        assert_contains(&grants[0].detail, claims["jti"].as_str().unwrap());

        // The operator's API-key grants (HS256) still work beside member grants, and the
        // page may not mint its own (no dev mode with sign-in configured).
        let backend = env
            .config
            .mint_grant(&plenary::grant::Claims::new(
                "gm",
                "backend-user",
                "Backend user",
                plenary_proto::Role::Member,
                Duration::from_secs(300),
            ))
            .unwrap();
        assert_welcome(&env.join(&backend, "gm").await);
        let (status, v) = env
            .browser()
            .api(
                Method::POST,
                "/api/dev/grant",
                Some(json!({ "room": "gm", "name": "x" })),
            )
            .await;
        assert!(status.is_client_error(), "{status} {v}");

        // Not signed in: no grant. Bad room names: a clear 400.
        assert_eq!(env.browser().grant("gm").await.0, StatusCode::UNAUTHORIZED);
        let (status, v) = b.grant("no/such room").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_out_of_bounds_grants_are_refused() {
    bounded(async {
        let env = env().await;
        let b = env.signed_in_as("101").await;
        let real = b.must_grant("gm").await;
        let (_, claims) = decode_unverified(&real);
        let (kid, key) = env.signing_key();
        let now = unix_now();
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims.clone();
            c["jti"] = json!(plenary::secret::random_id());
            f(&mut c);
            c
        };

        // A key that is not the server's, under the server's kid.
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        let stranger = ed25519_dalek::SigningKey::from_bytes(&seed);
        let stranger_key = {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            EncodingKey::from_ed_der(stranger.to_pkcs8_der().unwrap().as_bytes())
        };
        // The server's public key, as an attacker could know it.
        let public = env
            .store()
            .run_sync(|c| store::signing_keys(c))
            .unwrap()
            .into_iter()
            .find(|r| r.kid == kid)
            .unwrap()
            .public_key;
        let hs256 = |secret: &[u8], kid: &str| {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid.into());
            jsonwebtoken::encode(&h, &with(&|_| {}), &EncodingKey::from_secret(secret)).unwrap()
        };
        let b64 = |v: &Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let alg_none = format!(
            "{}.{}.",
            b64(&json!({ "alg": "none", "typ": "JWT", "kid": kid })),
            b64(&with(&|_| {}))
        );
        let tampered = {
            let parts: Vec<&str> = real.split('.').collect();
            let mut c = claims.clone();
            c["room"] = json!("board");
            c["permissions"]["is_host"] = json!(true);
            format!("{}.{}.{}", parts[0], b64(&c), parts[2])
        };

        let cases: Vec<(&str, String, &str, &str)> = vec![
            (
                "forged signature",
                sign_eddsa(&kid, &stranger_key, &with(&|_| {})),
                "gm",
                "signature is invalid",
            ),
            ("tampered claims", tampered, "board", "signature is invalid"),
            ("alg none", alg_none, "gm", "signing algorithm"),
            (
                "HS256 with the public key as secret",
                hs256(&public, &kid),
                "gm",
                "signing algorithm",
            ),
            (
                "HS256 with the public key's PEM as secret",
                hs256(
                    format!(
                        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                        {
                            use base64::Engine;
                            let mut der = vec![
                                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21,
                                0x00,
                            ];
                            der.extend_from_slice(&public);
                            base64::engine::general_purpose::STANDARD.encode(der)
                        }
                    )
                    .as_bytes(),
                    &kid,
                ),
                "gm",
                "signing algorithm",
            ),
            (
                "expired",
                sign_eddsa(
                    &kid,
                    &key,
                    &with(&|c| {
                        c["nbf"] = json!(now - 100);
                        c["exp"] = json!(now - 35); // beyond the 30 s leeway
                    }),
                ),
                "gm",
                "expired",
            ),
            (
                "not yet valid",
                sign_eddsa(
                    &kid,
                    &key,
                    &with(&|c| {
                        c["nbf"] = json!(now + 35);
                        c["exp"] = json!(now + 100);
                    }),
                ),
                "gm",
                "not valid yet",
            ),
            (
                "wrong audience",
                sign_eddsa(&kid, &key, &with(&|c| c["aud"] = json!("another-sfu"))),
                "gm",
                "another audience",
            ),
            (
                "wrong issuer",
                sign_eddsa(&kid, &key, &with(&|c| c["iss"] = json!("test-key"))),
                "gm",
                "issuer",
            ),
            (
                "lifetime over the bound",
                sign_eddsa(&kid, &key, &with(&|c| c["exp"] = json!(now + 3600))),
                "gm",
                "lifetime",
            ),
            (
                "unknown kid",
                sign_eddsa("ed-0000000000000000", &key, &with(&|_| {})),
                "gm",
                "unknown key",
            ),
            (
                "wrong room in the claims",
                sign_eddsa(&kid, &key, &with(&|c| c["room"] = json!("board"))),
                "gm",
                "another room",
            ),
            (
                "the real grant, for another room",
                real.clone(),
                "board",
                "another room",
            ),
        ];
        for (what, token, room, why) in &cases {
            let answer = env.join(token, room).await;
            assert_eq!(answer["type"], "error", "{what}: {answer}");
            assert_eq!(answer["code"], "invalid_grant", "{what}: {answer}");
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(why),
                "{what}: expected {why:?} in {answer}"
            );
        }
        // Nothing recorded for refused joins: the real grant still works where it belongs.
        assert_eq!(env.count("used_jti"), 0);
        assert_welcome(&env.join(&real, "gm").await);
        // A correctly signed grant from the test (same key, fresh jti) joins: the checks above
        // refused the tokens for what was wrong with them, not for being made here.
        assert_welcome(
            &env.join(&sign_eddsa(&kid, &key, &with(&|_| {})), "gm")
                .await,
        );
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_while_running_keeps_old_grants_valid() {
    bounded(async {
        let env = env().await;
        let b = env.signed_in_as("101").await;
        let old = b.must_grant("gm").await;
        let old_kid = decode_unverified(&old).0["kid"]
            .as_str()
            .unwrap()
            .to_string();

        // `plenary keys rotate` on the same database while the server runs.
        let new_kid =
            plenary::membership::keys::rotate(&env.store(), &env.keys_dir(), unix_now() as i64)
                .unwrap();
        assert_ne!(new_kid, old_kid);
        let new = b.must_grant("gm").await;
        assert_eq!(decode_unverified(&new).0["kid"], new_kid.as_str());
        assert_welcome(&env.join(&old, "gm").await);
        assert_welcome(&env.join(&new, "gm").await);

        // A key the server has not signed with yet is loaded when a grant names it.
        let newest =
            plenary::membership::keys::rotate(&env.store(), &env.keys_dir(), unix_now() as i64)
                .unwrap();
        let (kid, key) = env.signing_key();
        assert_eq!(kid, newest);
        let mut claims = decode_unverified(&new).1;
        claims["jti"] = json!(plenary::secret::random_id());
        assert_welcome(&env.join(&sign_eddsa(&kid, &key, &claims), "gm").await);
        assert_eq!(
            env.audit_of("key_rotated").len(),
            3,
            "the first key and two rotations"
        );
        env.stop().await;
    })
    .await;
}

// ==== rooms ====================================================================================

fn host() -> Account {
    Account::new("900", "hana").with_role(Role::new("3", "Moderator", 0x10000))
}

/// Plenary with alice (member), bob (member) and hana (host), all signed in.
async fn three_members(
    tweak: impl FnOnce(&mut plenary::config::MembershipConfig),
) -> (Env, Browser, Browser, Browser) {
    let env = env_with(tweak).await;
    env.double.add_account(bob());
    env.double.add_account(host());
    let alice = env.signed_in_as("101").await;
    let bob = env.signed_in_as("102").await;
    let hana = env.signed_in_as("900").await;
    assert_eq!(me(&hana).await.1["is_host"], true);
    (env, alice, bob, hana)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hosts_open_rooms_when_so_configured() {
    bounded(async {
        let (env, alice, _bob, hana) =
            three_members(|m| m.who_may_open_rooms = OpenRooms::Hosts).await;
        let (status, v) = alice.grant("gm").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(v["error"].as_str().unwrap(), "only hosts may open rooms");
        assert_eq!(env.count("rooms"), 0);
        assert_eq!(env.audit_of("grant").len(), 0);
        hana.must_grant("gm").await;
        assert_eq!(env.count("rooms"), 1);
        assert_eq!(env.audit_of("room_opened").len(), 1);
        alice.must_grant("gm").await;
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_cannot_open_a_room_when_only_hosts_may() {
    bounded(async {
        let (env, alice, _bob, hana) =
            three_members(|m| m.who_may_open_rooms = OpenRooms::Hosts).await;
        // Alice invites a partner to a meeting no host has opened yet.
        let (id, token) = must_invite(&alice, "board", 2).await;
        let grants = env.audit_of("grant").len();
        let (status, v) = redeem(&env, &token, "Pat").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(v["error"].as_str().unwrap(), "not been opened");
        assert_nothing_written(&env, &id, 0, grants);
        assert_eq!(
            env.store()
                .run_sync(|c| store::room_mode(c, "board"))
                .unwrap(),
            None
        );
        // Once a host opened it, the invitation works.
        hana.must_grant("board").await;
        assert_eq!(redeem(&env, &token, "Pat").await.0, StatusCode::OK);
        env.stop().await;
    })
    .await;
}

async fn invite(b: &Browser, room: &str, max_uses: i64) -> (StatusCode, Value) {
    b.api(
        Method::POST,
        "/api/invitations",
        Some(json!({
            "room": room,
            "label": "Partner Co-op",
            "valid_hours": 24,
            "max_uses": max_uses,
            "can_speak": true,
            "can_video": false,
        })),
    )
    .await
}

async fn must_invite(b: &Browser, room: &str, max_uses: i64) -> (String, String) {
    let (status, v) = invite(b, room, max_uses).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let link = v["link"].as_str().unwrap();
    let token = link.split_once("#").unwrap().1.to_string();
    (v["invitation"]["id"].as_str().unwrap().to_string(), token)
}

async fn preview(env: &Env, token: &str) -> (StatusCode, Value) {
    env.browser()
        .api(
            Method::POST,
            "/api/invitations/preview",
            Some(json!({ "token": token })),
        )
        .await
}

async fn redeem(env: &Env, token: &str, name: &str) -> (StatusCode, Value) {
    env.browser()
        .api(
            Method::POST,
            "/api/invitations/redeem",
            Some(json!({ "token": token, "name": name })),
        )
        .await
}

fn uses(env: &Env, id: &str) -> (i64, bool) {
    let id = id.to_string();
    let inv = env
        .store()
        .run_sync(move |c| store::invitation_by_id(c, &id))
        .unwrap()
        .expect("the invitation exists");
    (inv.uses, inv.revoked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_set_room_modes_and_others_are_refused_accordingly() {
    bounded(async {
        let (env, alice, bob, hana) = three_members(|_| {}).await;
        // Mode of a room nobody opened: 404.
        assert_eq!(hana.set_mode("gm", "locked").await.0, StatusCode::NOT_FOUND);
        alice.must_grant("gm").await; // alice opens it
        let (_, token) = must_invite(&alice, "gm", 10).await;

        // Members only: members in, guests out, no new invitations.
        let (status, v) = hana.set_mode("gm", "members_only").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        bob.must_grant("gm").await;
        let (status, v) = redeem(&env, &token, "Pat").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(v["error"].as_str().unwrap(), "members only");
        assert_eq!(preview(&env, &token).await.0, StatusCode::FORBIDDEN);
        let (status, v) = invite(&bob, "gm", 1).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(env.count("invitations"), 1);

        // Locked: only hosts.
        hana.set_mode("gm", "locked").await;
        let (status, v) = bob.grant("gm").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(v["error"].as_str().unwrap(), "locked");
        hana.must_grant("gm").await;
        let (status, v) = redeem(&env, &token, "Pat").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(v["error"].as_str().unwrap(), "locked");

        // Members are not hosts; unknown modes are refused; nobody signed in gets a 401.
        let (status, v) = alice.set_mode("gm", "members_and_guests").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(v["error"].as_str().unwrap(), "only hosts");
        assert!(hana.set_mode("gm", "wide_open").await.0.is_client_error());
        assert_eq!(
            env.browser().set_mode("gm", "members_and_guests").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            env.store().run_sync(|c| store::room_mode(c, "gm")).unwrap(),
            Some(store::RoomMode::Locked)
        );

        // Open to guests again: the invitation works.
        hana.set_mode("gm", "members_and_guests").await;
        assert_eq!(redeem(&env, &token, "Pat").await.0, StatusCode::OK);
        assert_eq!(env.audit_of("room_mode").len(), 3);
        assert!(env
            .audit_of("room_mode")
            .iter()
            .all(|e| e.actor == "@hana@social.example" && e.room == "gm"));
        env.stop().await;
    })
    .await;
}

// ==== invitations ==============================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_is_previewed_and_redeemed_for_a_guest_grant_that_joins() {
    bounded(async {
        let env = env().await;
        let alice = env.signed_in_as("101").await;
        let (status, v) = invite(&alice, "gm", 3).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        let link = v["link"].as_str().unwrap();
        let (before, token) = link.split_once('#').unwrap();
        assert_eq!(
            before,
            format!("{}/invite", env.base),
            "the token is in the fragment"
        );
        assert!(token.len() >= 22, "at least 128 bits: {token}");
        let id = v["invitation"]["id"].as_str().unwrap().to_string();
        assert_eq!(v["invitation"]["inviter_handle"], "@alice@social.example");
        assert_eq!(v["invitation"]["uses"], 0);

        // Stored only as a hash: the token is nowhere in the database files.
        let stored = env
            .store()
            .run_sync({
                let t = token.to_string();
                move |c| store::invitation_by_token(c, &t)
            })
            .unwrap()
            .unwrap();
        assert_eq!(stored.id, id);
        for entry in std::fs::read_dir(&env.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "the token is in {}",
                    path.display()
                );
            }
        }
        // The member's list shows it, without the token.
        let (status, list) = alice.api(Method::GET, "/api/invitations", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["invitations"][0]["id"], id.as_str());
        assert!(!list.to_string().contains(token));
        // The guest's page and the member's "my invitations" page exist.
        assert_eq!(env.browser().get("/invite").await.status, StatusCode::OK);
        assert_eq!(alice.get("/invitations").await.status, StatusCode::OK);

        let (status, p) = preview(&env, token).await;
        assert_eq!(status, StatusCode::OK, "{p}");
        assert_eq!(p["room"], "gm");
        assert_eq!(p["label"], "Partner Co-op");
        assert_eq!(p["inviter"], "@alice@social.example");
        assert_eq!(p["can_speak"], true);
        assert_eq!(p["can_video"], false);
        assert_eq!(uses(&env, &id), (0, false), "a preview uses nothing");

        let guest = env.browser();
        let resp = guest
            .api(
                Method::POST,
                "/api/invitations/redeem",
                Some(json!({ "token": token, "name": "Pat from Partner" })),
            )
            .await;
        assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
        assert_eq!(
            guest.cookie("/", "plenary_session"),
            None,
            "guests get no session"
        );
        let grant = resp.1["grant"].as_str().unwrap().to_string();
        let (header, claims) = decode_unverified(&grant);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(claims["role"], "guest");
        assert_eq!(claims["invited_by"], "@alice@social.example");
        assert_eq!(claims["name"], "Pat from Partner");
        assert!(claims["sub"].as_str().unwrap().starts_with("guest:"));
        assert_eq!(claims["permissions"]["is_host"], false);
        assert_eq!(claims["permissions"]["can_publish"], true);
        assert_eq!(
            claims["permissions"]["can_publish_sources"],
            json!(["microphone"])
        );
        assert_eq!(uses(&env, &id), (1, false));

        let me = assert_welcome(&env.join(&grant, "gm").await).clone();
        assert_eq!(me["role"], "guest");
        assert_eq!(me["invited_by"], "@alice@social.example");
        assert_eq!(me["name"], "Pat from Partner");
        assert_invalid_grant(&env.join(&grant, "gm").await, "already used");

        // The guest's time counts against the inviting member's monthly budget.
        let (_, mut ws) = membership_env::connect(
            &env.ws_url(),
            &{
                let (_, g) = redeem(&env, token, "Pat again").await;
                g["grant"].as_str().unwrap().to_string()
            },
            "gm",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        membership_env::send_json(&mut ws, &json!({ "type": "leave" })).await;
        let _ = ws.close(None).await;
        let m = month(unix_now() as i64);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let secs = env
                .store()
                .run_sync(|c| store::guest_seconds(c, "@alice@social.example", &m))
                .unwrap();
            if secs >= 1 {
                break;
            }
            assert!(Instant::now() < deadline, "no guest time recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let redeemed = env.audit_of("invitation_redeemed");
        assert_eq!(redeemed.len(), 2);
        assert_eq!(redeemed[0].actor, "guest:Pat from Partner");
        assert_eq!(env.audit_of("invitation_created").len(), 1);

        // What guests may publish follows the invitation.
        for (speak, video, sources, publish) in [
            (false, false, json!([]), false),
            (true, true, json!(["microphone", "camera"]), true),
            (false, true, json!(["camera"]), true),
        ] {
            let (status, v) = alice
                .api(
                    Method::POST,
                    "/api/invitations",
                    Some(
                        json!({ "room": "gm", "label": "P", "valid_hours": 1, "max_uses": 1,
                                 "can_speak": speak, "can_video": video }),
                    ),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{v}");
            let token = v["link"]
                .as_str()
                .unwrap()
                .split_once('#')
                .unwrap()
                .1
                .to_string();
            let (_, g) = redeem(&env, &token, "Guest").await;
            let (_, c) = decode_unverified(g["grant"].as_str().unwrap());
            assert_eq!(
                c["permissions"]["can_publish_sources"], sources,
                "{speak} {video}"
            );
            assert_eq!(c["permissions"]["can_publish"], publish, "{speak} {video}");
            assert_eq!(c["permissions"]["is_host"], false);
        }
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_time_counts_after_a_resumed_connection_too() {
    bounded(async {
        let env = env().await;
        let alice = env.signed_in_as("101").await;
        let (_, token) = must_invite(&alice, "gm", 5).await;
        let (_, g) = redeem(&env, &token, "Pat").await;
        let (welcome, ws) =
            membership_env::connect(&env.ws_url(), g["grant"].as_str().unwrap(), "gm").await;
        assert_welcome(&welcome);
        let resume = welcome["resume_token"].as_str().unwrap().to_string();
        // The connection drops (no leave); the guest comes back with the resume token.
        drop(ws);
        let (mut ws, _) = tokio_tungstenite::connect_async(env.ws_url())
            .await
            .unwrap();
        let msg = json!({ "type": "join", "protocol": 1, "resume": resume });
        {
            use futures_util::SinkExt;
            ws.send(tokio_tungstenite::tungstenite::Message::Text(
                msg.to_string().into(),
            ))
            .await
            .unwrap();
        }
        let again = membership_env::next_json(&mut ws).await;
        assert_eq!(again["type"], "welcome", "{again}");
        assert_eq!(again["me"]["role"], "guest");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        membership_env::send_json(&mut ws, &json!({ "type": "leave" })).await;
        let _ = ws.close(None).await;
        let m = month(unix_now() as i64);
        let store = env.store();
        eventually("the resumed guest's time is counted", || {
            store
                .run_sync(|c| store::guest_seconds(c, "@alice@social.example", &m))
                .unwrap()
                >= 1
        })
        .await;
        env.stop().await;
    })
    .await;
}

/// Writes an invitation straight into the store (as an old one would be).
fn stored_invitation(env: &Env, token: &str, valid_until: i64) -> String {
    let id = format!("inv_test{}", &plenary::secret::random_id()[..8]);
    let inv = Invitation {
        id: id.clone(),
        room: "gm".into(),
        label: "Old partner".into(),
        inviter_instance: INSTANCE.into(),
        inviter_account: "101".into(),
        inviter_handle: "@alice@social.example".into(),
        valid_until,
        max_uses: 5,
        uses: 0,
        can_speak: true,
        can_video: true,
        revoked: false,
        created_at: valid_until - 3600,
    };
    let token = token.to_string();
    env.store()
        .run_sync(move |c| store::create_invitation(c, &token, &inv))
        .unwrap();
    id
}

/// Asserts a refused redemption changed nothing: no use, no audit entry, no grant.
fn assert_nothing_written(env: &Env, id: &str, uses_before: i64, grants_before: usize) {
    assert_eq!(uses(env, id).0, uses_before, "invitation uses unchanged");
    assert!(
        env.audit_of("invitation_redeemed")
            .iter()
            .all(|e| !e.detail.contains(id)),
        "no redemption recorded"
    );
    assert_eq!(
        env.audit_of("grant").len(),
        grants_before,
        "no grant issued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_invitation_is_refused() {
    bounded(async {
        let env = env().await;
        let _alice = env.signed_in_as("101").await;
        let grants = env.audit_of("grant").len();
        let id = stored_invitation(
            &env,
            "old-token-0123456789abcdefghij",
            unix_now() as i64 - 1,
        );
        for (status, v) in [
            preview(&env, "old-token-0123456789abcdefghij").await,
            redeem(&env, "old-token-0123456789abcdefghij", "Pat").await,
        ] {
            assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
            assert_eq!(v["error"], "this invitation has expired");
        }
        assert_nothing_written(&env, &id, 0, grants);
        // An unknown token is a 404, with nothing written either.
        let (status, v) = redeem(&env, "no-such-token", "Pat").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(env.audit_of("invitation_redeemed").len(), 0);
        // Longer than allowed at creation: refused.
        let alice = env.signed_in_as("101").await;
        let (status, v) = alice
            .api(
                Method::POST,
                "/api/invitations",
                Some(
                    json!({ "room": "gm", "label": "P", "valid_hours": 7 * 24 + 1, "max_uses": 1 }),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(env.count("invitations"), 1);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_up_invitation_is_refused() {
    bounded(async {
        let env = env().await;
        let alice = env.signed_in_as("101").await;
        let (id, token) = must_invite(&alice, "gm", 1).await;
        assert_eq!(redeem(&env, &token, "First").await.0, StatusCode::OK);
        let grants = env.audit_of("grant").len();
        let (status, v) = redeem(&env, &token, "Second").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(
            v["error"].as_str().unwrap(),
            "used as many times as it allows",
        );
        assert_eq!(preview(&env, &token).await.0, StatusCode::FORBIDDEN);
        assert_eq!(uses(&env, &id).0, 1);
        assert_eq!(env.audit_of("invitation_redeemed").len(), 1);
        assert_eq!(env.audit_of("grant").len(), grants);

        // Many guests at once on the last use: exactly one gets in.
        let (id, token) = must_invite(&alice, "gm", 1).await;
        let mut tasks = Vec::new();
        for n in 0..6 {
            let (b, token) = (env.browser(), token.clone());
            tasks.push(tokio::spawn(async move {
                b.api(
                    Method::POST,
                    "/api/invitations/redeem",
                    Some(json!({ "token": token, "name": format!("Guest {n}") })),
                )
                .await
                .0
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap() == StatusCode::OK {
                ok += 1;
            }
        }
        assert_eq!(ok, 1);
        assert_eq!(uses(&env, &id).0, 1);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_invitation_is_refused() {
    bounded(async {
        let (env, alice, bob, hana) = three_members(|_| {}).await;
        let (id, token) = must_invite(&alice, "gm", 5).await;
        // Another member may not revoke it, nor list everyone's.
        let (status, v) = bob
            .api(Method::DELETE, &format!("/api/invitations/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(uses(&env, &id), (0, false));
        assert_eq!(
            bob.api(Method::GET, "/api/invitations?all=1", None).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            bob.api(Method::GET, "/api/invitations", None).await.1["invitations"],
            json!([])
        );
        assert_eq!(
            bob.api(Method::DELETE, "/api/invitations/inv_nope", None)
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        // The member who made it may.
        let (status, v) = alice
            .api(Method::DELETE, &format!("/api/invitations/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let grants = env.audit_of("grant").len();
        for (status, v) in [
            preview(&env, &token).await,
            redeem(&env, &token, "Pat").await,
        ] {
            assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
            assert_eq!(v["error"], "this invitation was revoked");
        }
        assert_nothing_written(&env, &id, 0, grants);
        // A host may revoke anyone's, and sees them all.
        let (id2, _) = must_invite(&bob, "gm", 5).await;
        let (status, all) = hana.api(Method::GET, "/api/invitations?all=1", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(all["invitations"].as_array().unwrap().len(), 2);
        assert_eq!(
            hana.api(Method::DELETE, &format!("/api/invitations/{id2}"), None)
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(uses(&env, &id2), (0, true));
        let revoked = env.audit_of("invitation_revoked");
        assert_eq!(revoked.len(), 2);
        assert_eq!(revoked[1].actor, "@hana@social.example");
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_stops_when_its_member_is_no_longer_a_member() {
    bounded(async {
        let env = env_with(|m| m.recheck_secs = 0).await;
        env.double.add_account(bob());
        let alice = env.signed_in_as("101").await;
        let bob_b = env.signed_in_as("102").await;
        let (alice_inv, alice_token) = must_invite(&alice, "gm", 5).await;
        let (bob_inv, bob_token) = must_invite(&bob_b, "gm", 5).await;
        // Signing out is not leaving: Bob's invitation outlives his session.
        bob_b.api(Method::POST, "/auth/logout", None).await;
        // While they are members, the instance is asked and says yes.
        let lookups = env.double.counters().account_lookups;
        assert_eq!(preview(&env, &alice_token).await.0, StatusCode::OK);
        assert_eq!(preview(&env, &bob_token).await.0, StatusCode::OK);
        assert!(env.double.counters().account_lookups >= lookups + 2);

        // Alice's account is deleted, Bob's suspended.
        env.double.account("101", |a| a.deleted = true);
        env.double.account("102", |a| a.suspended = true);
        let grants = env.audit_of("grant").len();
        for (token, id) in [(&alice_token, &alice_inv), (&bob_token, &bob_inv)] {
            for (status, v) in [preview(&env, token).await, redeem(&env, token, "Pat").await] {
                assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
                assert_eq!(
                    v["error"],
                    "the member who invited you is no longer a member"
                );
            }
            assert_nothing_written(&env, id, 0, grants);
        }
        for account in ["101", "102"] {
            assert_eq!(
                env.store()
                    .run_sync(|c| store::member_status(c, INSTANCE, account))
                    .unwrap()
                    .map(|m| m.0),
                Some(false),
                "{account}"
            );
        }

        // Membership lost at a member's own re-check also stops their invitations, without
        // asking the instance again.
        env.double.add_account(Account::new("103", "carol"));
        let carol = env.signed_in_as("103").await;
        let (carol_inv, carol_token) = must_invite(&carol, "gm", 5).await;
        env.double.account("103", |a| a.suspended = true);
        assert_eq!(carol.grant("gm").await.0, StatusCode::FORBIDDEN);
        let lookups = env.double.counters().account_lookups;
        let (status, v) = redeem(&env, &carol_token, "Pat").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(
            v["error"],
            "the member who invited you is no longer a member"
        );
        assert_eq!(env.double.counters().account_lookups, lookups);
        assert_nothing_written(&env, &carol_inv, 0, env.audit_of("grant").len());
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_have_no_host_powers() {
    bounded(async {
        let env = env().await;
        let alice = env.signed_in_as("101").await;
        alice.must_grant("gm").await;
        let (id, token) = must_invite(&alice, "gm", 5).await;
        let guest = env.browser();
        let (status, g) = guest
            .api(
                Method::POST,
                "/api/invitations/redeem",
                Some(json!({ "token": token, "name": "Pat" })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{g}");
        let (_, claims) = decode_unverified(g["grant"].as_str().unwrap());
        assert_eq!(claims["permissions"]["is_host"], false);
        assert_eq!(claims["role"], "guest");

        // Holding a guest grant (and no session), every member or host action is refused.
        let bearer = format!("Bearer {}", g["grant"].as_str().unwrap());
        for (method, path, body) in [
            (
                Method::PUT,
                "/api/rooms/gm/mode".to_string(),
                json!({ "mode": "locked" }),
            ),
            (
                Method::POST,
                "/api/grant".to_string(),
                json!({ "room": "gm" }),
            ),
            (
                Method::POST,
                "/api/invitations".to_string(),
                json!({ "room": "gm", "label": "x", "valid_hours": 1, "max_uses": 1 }),
            ),
            (
                Method::DELETE,
                format!("/api/invitations/{id}"),
                Value::Null,
            ),
            (
                Method::GET,
                "/api/invitations?all=1".to_string(),
                Value::Null,
            ),
            (Method::GET, "/api/me".to_string(), Value::Null),
        ] {
            let url = format!("{}{path}", env.base);
            let mut req = guest
                .http
                .request(method.clone(), &url)
                .header("authorization", &bearer);
            if !body.is_null() {
                req = req.json(&body);
            }
            let hop = guest.request(req, url).await;
            assert_eq!(
                hop.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {hop:#?}"
            );
        }
        assert_eq!(
            env.store().run_sync(|c| store::room_mode(c, "gm")).unwrap(),
            Some(store::RoomMode::MembersAndGuests)
        );
        assert_eq!(uses(&env, &id), (1, false));
        assert_eq!(env.count("invitations"), 1);
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_host_actions_in_the_meeting_are_refused() {
    bounded(async {
        let env = env().await;
        let alice = env.signed_in_as("101").await;
        let (_, token) = must_invite(&alice, "gm", 5).await;
        let (status, g) = redeem(&env, &token, "Pat").await;
        assert_eq!(status, StatusCode::OK, "{g}");
        // docs/protocol.md: `{"type":"host","action":…}`, host only (others get
        // `permission_denied`).
        let (welcome, mut ws) =
            membership_env::connect(&env.ws_url(), g["grant"].as_str().unwrap(), "gm").await;
        assert_eq!(assert_welcome(&welcome)["is_host"], false, "{welcome}");
        for action in [
            json!({ "type": "host", "action": "mute_all" }),
            json!({ "type": "host", "action": "lock", "locked": true }),
            json!({ "type": "host", "action": "end_meeting" }),
        ] {
            membership_env::send_json(&mut ws, &action).await;
            let error = membership_env::wait_for_type(&mut ws, "error").await;
            assert_eq!(error["code"], "permission_denied", "{action}: {error}");
        }
        let _ = ws.close(None).await;
        env.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_member_limits_bound_invitations_and_guest_time() {
    bounded(async {
        let env = env_with(|m| {
            m.max_active_invitations_per_member = 2;
            m.guest_minutes_per_month = 1;
        })
        .await;
        env.double.add_account(bob());
        let alice = env.signed_in_as("101").await;
        let (first, token) = must_invite(&alice, "gm", 5).await;
        must_invite(&alice, "gm", 5).await;
        let (status, v) = invite(&alice, "gm", 5).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(v["error"].as_str().unwrap(), "limit of active invitations");
        assert_eq!(env.count("invitations"), 2);
        // Another member has their own allowance.
        let bob_b = env.signed_in_as("102").await;
        must_invite(&bob_b, "gm", 5).await;
        // Revoking one frees a place.
        alice
            .api(Method::DELETE, &format!("/api/invitations/{first}"), None)
            .await;
        must_invite(&alice, "gm", 5).await;
        // Bad requests write nothing.
        for bad in [
            json!({ "room": "gm", "label": "", "valid_hours": 1, "max_uses": 1 }),
            json!({ "room": "gm", "label": "P", "valid_hours": 0, "max_uses": 1 }),
            json!({ "room": "gm", "label": "P", "valid_hours": 1, "max_uses": 0 }),
            json!({ "room": "bad room!", "label": "P", "valid_hours": 1, "max_uses": 1 }),
        ] {
            let (status, v) = alice
                .api(Method::POST, "/api/invitations", Some(bad.clone()))
                .await;
            assert!(status.is_client_error(), "{bad}: {status} {v}");
        }
        assert_eq!(env.count("invitations"), 4);

        // A month's guest time spent: the invitations stop.
        let second_token = {
            let (_, v) = invite(&bob_b, "gm", 5).await;
            v["link"]
                .as_str()
                .unwrap()
                .split_once('#')
                .unwrap()
                .1
                .to_string()
        };
        assert_eq!(preview(&env, &second_token).await.0, StatusCode::OK);
        let m = month(unix_now() as i64);
        env.store()
            .run_sync(|c| store::add_guest_seconds(c, "@bob@social.example", &m, 60))
            .unwrap();
        let (status, v) = redeem(&env, &second_token, "Pat").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_contains(v["error"].as_str().unwrap(), "guest time");
        // Alice's budget is untouched (her revoked invitation is still revoked).
        let _ = token;
        env.stop().await;
    })
    .await;
}

// ==== audit and logs ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_everything_and_no_secret_reaches_the_audit_or_the_log() {
    bounded(async {
        let env = env().await;
        env.double.add_account(host());
        let mut suspended = bob();
        suspended.suspended = true;
        env.double.add_account(suspended);
        let mut secrets: Vec<String> = Vec::new();

        // A sign-in, a refusal, a grant and a join, a host action, an invitation created,
        // redeemed and revoked, a sign-out.
        env.double.approve_as("101");
        let alice = env.browser();
        let flow = alice.sign_in(INSTANCE, None).await;
        flow.expect_success();
        secrets.push(flow.login.location_param("state").unwrap());
        secrets.push(cookie_value(
            flow.login.set_cookie("plenary_oauth_state").unwrap(),
        ));
        secrets.push(flow.login.location_param("code_challenge").unwrap());
        secrets.push(alice.cookie("/", "plenary_session").unwrap());
        env.double.approve_as("102");
        env.browser()
            .sign_in(INSTANCE, None)
            .await
            .expect_refused(StatusCode::FORBIDDEN);
        let hana = env.signed_in_as("900").await;
        secrets.push(hana.cookie("/", "plenary_session").unwrap());
        let grant = alice.must_grant("gm").await;
        assert_welcome(&env.join(&grant, "gm").await);
        secrets.push(grant);
        assert_eq!(
            hana.set_mode("gm", "members_and_guests").await.0,
            StatusCode::OK
        );
        let (id, token) = must_invite(&alice, "gm", 2).await;
        let (_, g) = redeem(&env, &token, "Pat").await;
        secrets.push(g["grant"].as_str().unwrap().to_string());
        secrets.push(token);
        alice
            .api(Method::DELETE, &format!("/api/invitations/{id}"), None)
            .await;
        alice.api(Method::POST, "/auth/logout", None).await;
        secrets.extend(env.double.secrets());

        // `plenary audit --json` on the same database.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plenary"))
            .args(["audit", "--json", "--limit", "1000"])
            .env_clear()
            .env(
                "PLENARY_MEMBERSHIP_DATABASE",
                &env.config.membership.database,
            )
            .env("PLENARY_LOG", "warn")
            .output()
            .expect("plenary audit runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        let entries: Vec<Value> = printed
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect();
        let kinds: Vec<&str> = entries.iter().filter_map(|e| e["kind"].as_str()).collect();
        for kind in [
            "key_rotated",
            "sign_in",
            "sign_in_refused",
            "room_opened",
            "grant",
            "room_mode",
            "invitation_created",
            "invitation_redeemed",
            "invitation_revoked",
            "sign_out",
        ] {
            assert!(kinds.contains(&kind), "no {kind} in:\n{printed}");
        }
        let refused = entries
            .iter()
            .find(|e| e["kind"] == "sign_in_refused")
            .unwrap();
        assert_contains(refused["detail"].as_str().unwrap(), "reason");
        let grant = entries
            .iter()
            .find(|e| e["kind"] == "grant" && e["actor"] == "@alice@social.example")
            .unwrap();
        let detail: Value = serde_json::from_str(grant["detail"].as_str().unwrap()).unwrap();
        for field in ["jti", "identity", "permissions", "exp", "kid"] {
            assert!(
                detail.get(field).is_some(),
                "grant detail lacks {field}: {detail}"
            );
        }
        assert_eq!(grant["room"], "gm");

        let log = captured_log();
        assert_contains(&log, "signed in");
        assert!(secrets.len() >= 10, "{secrets:?}");
        for secret in &secrets {
            assert!(
                !printed.contains(secret.as_str()),
                "a secret is in the audit: {secret}"
            );
            assert!(
                !log.contains(secret.as_str()),
                "a secret is in the log: {secret}"
            );
        }
        env.stop().await;
    })
    .await;
}

// ==== issue 12: who owns a handle, pending sign-ins, replays, secrets at rest, operations ====

/// Another configured instance that calls itself `social.example` (the co-op's domain) must
/// not turn its own "alice" into the co-op's `@alice@social.example`: handles take their
/// domain from the operator's configuration, never from the instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cannot_claim_another_instances_members() {
    bounded(async {
        let rogue = MastodonDouble::start(Switches::mastodon_4_3(), alice()).await;
        assert_eq!(
            rogue.domain(),
            "social.example",
            "it claims the co-op's domain"
        );
        // The operator configured it without a `domain`: its handles use its address.
        let mut rogue_config = instance_config("rogue", &rogue);
        rogue_config.domain = String::new();
        let env = env_with(|m| {
            m.hosts = vec!["@alice@social.example".into()];
            m.instances.push(rogue_config);
        })
        .await;
        let real = env.signed_in_as("101").await;
        let (_, v) = me(&real).await;
        assert_eq!(v["handle"], "@alice@social.example");
        assert_eq!(v["is_host"], true);

        let impostor = env.browser();
        impostor.sign_in("rogue", None).await.expect_success();
        let (status, v) = me(&impostor).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let rogue_host = url::Url::parse(&rogue.base_url()).unwrap();
        let rogue_domain = format!(
            "{}:{}",
            rogue_host.host_str().unwrap(),
            rogue_host.port().unwrap()
        );
        assert_eq!(v["handle"], format!("@alice@{rogue_domain}"));
        assert_eq!(v["is_host"], false, "not the co-op's host");
        let (_, claims) = decode_unverified(&impostor.must_grant("gm").await);
        assert_ne!(claims["sub"], "@alice@social.example");
        assert_eq!(claims["permissions"]["is_host"], false);
        // The operator learns that the instance calls itself by another domain.
        eventually("a warning about the reported domain", || {
            captured_log().contains("calls itself by another domain")
        })
        .await;
        env.stop().await;
    })
    .await;
}

/// Pointing an instance id at another host registers Plenary there afresh: the old host's
/// client secret and the tokens it issued never go to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_an_instance_to_another_host_keeps_its_secrets_home() {
    bounded(async {
        let a = MastodonDouble::start(Switches::mastodon_4_3(), alice()).await;
        let b = MastodonDouble::start(Switches::mastodon_4_3(), alice()).await;
        let mut env = Env::start(a.clone(), |m| m.recheck_secs = 0).await;
        let old_session = env.signed_in_as("101").await;
        assert_eq!(a.counters().apps_registered, 1);
        let a_secrets = a.secrets();
        assert!(!a_secrets.is_empty());

        env.restart(|c| c.membership.instances[0].base_url = b.base_url())
            .await;
        b.approve_as("101");
        env.browser().sign_in(INSTANCE, None).await.expect_success();
        assert_eq!(b.counters().apps_registered, 1, "a fresh registration");
        // The session signed in at A does not carry A's token to B: it ends.
        let (status, v) = old_session.grant("gm").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
        let received = b.received_credentials();
        assert!(!received.is_empty());
        for s in &a_secrets {
            assert!(
                !received.contains(s),
                "a secret of the old host reached the new one: {s}"
            );
        }
        assert_eq!(a.counters().apps_registered, 1);
        env.stop().await;
    })
    .await;
}

/// Starting sign-ins costs the server nothing an anonymous client can use up: after more
/// than ten thousand unanswered `GET /auth/{id}/login`, a member still signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sign_in_starts_cannot_lock_members_out() {
    bounded(async {
        let env = env().await;
        let url = format!("{}/auth/{INSTANCE}/login", env.base);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(membership_env::T)
            .build()
            .unwrap();
        const TASKS: usize = 16;
        const EACH: usize = 626; // 16 × 626 = 10,016 sign-ins started and never finished
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let (http, url) = (http.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut refused = Vec::new();
                for _ in 0..EACH {
                    let resp = http.get(&url).send().await.expect("an answer");
                    if resp.status() != StatusCode::SEE_OTHER {
                        refused.push(resp.status());
                    }
                }
                refused
            }));
        }
        let mut refused = Vec::new();
        for t in tasks {
            refused.extend(t.await.unwrap());
        }
        assert!(
            refused.is_empty(),
            "{} of {} sign-in starts were refused: {:?}",
            refused.len(),
            TASKS * EACH,
            &refused[..refused.len().min(5)]
        );
        assert_eq!(env.double.counters().apps_registered, 1);

        let flow = env.browser().sign_in(INSTANCE, None).await;
        flow.expect_success();
        assert_eq!(env.count("sessions"), 1);
        env.stop().await;
    })
    .await;
}

/// Bytes of the database files (main and write-ahead log).
fn database_bytes(env: &Env) -> Vec<u8> {
    let db = &env.config.membership.database;
    let mut bytes = std::fs::read(db).unwrap_or_default();
    bytes.extend(std::fs::read(format!("{db}-wal")).unwrap_or_default());
    bytes
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The instance's access token is kept encrypted in SQLite (with a key beside the signing
/// keys), and still works after a restart: the re-check and the sign-out use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_tokens_are_encrypted_at_rest_and_survive_a_restart() {
    bounded(async {
        let mut env = env_with(|m| m.recheck_secs = 0).await;
        let b = env.signed_in_as("101").await;
        let token = env.double.live_user_tokens().pop().unwrap();
        let stored: String = env
            .store()
            .run_sync(|c| Ok(c.query_row("SELECT access_token FROM sessions", [], |r| r.get(0))?))
            .unwrap();
        assert!(!stored.contains(&token), "the token is stored in clear");
        assert!(
            !contains_bytes(&database_bytes(&env), token.as_bytes()),
            "the token's bytes are in the database files"
        );

        // As an older version left it: the token in clear. A restart seals it.
        env.store()
            .run_sync(|c| Ok(c.execute("UPDATE sessions SET access_token = ?1", [&token])?))
            .unwrap();
        env.restart(|_| {}).await;
        let stored: String = env
            .store()
            .run_sync(|c| Ok(c.query_row("SELECT access_token FROM sessions", [], |r| r.get(0))?))
            .unwrap();
        assert!(!stored.contains(&token), "sealed at start: {stored}");
        let verified = env.double.counters().verify_credentials;
        let grant = b.must_grant("gm").await;
        assert_eq!(
            env.double.counters().verify_credentials,
            verified + 1,
            "the re-check reached the instance with the token"
        );
        assert_welcome(&env.join(&grant, "gm").await);
        let (status, v) = b.api(Method::POST, "/auth/logout", None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(env.double.revoked(), vec![token.clone()]);
        assert!(plenary::membership::sealing::path(&env.keys_dir()).exists());
        env.stop().await;
    })
    .await;
}

fn api_key_grant(config: &plenary::config::Config, ttl: Duration) -> String {
    config
        .mint_grant(&plenary::grant::Claims::new(
            "gm",
            "backend-user",
            "Backend user",
            plenary_proto::Role::Member,
            ttl,
        ))
        .unwrap()
}

/// An API-key (HS256) grant opens one join, like a member grant: a leaked URL does not
/// replay. This holds with the SQLite store (sign-in configured) and without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_grants_join_once_with_or_without_a_database() {
    bounded(async {
        let env = env().await;
        let grant = api_key_grant(&env.config, Duration::from_secs(300));
        assert_welcome(&env.join(&grant, "gm").await);
        assert_invalid_grant(&env.join(&grant, "gm").await, "already used");
        // A fresh grant for the same identity still joins.
        let fresh = api_key_grant(&env.config, Duration::from_secs(300));
        assert_welcome(&env.join(&fresh, "gm").await);
        env.stop().await;

        let mut config = plenary::config::Config::for_tests();
        assert!(config.membership.instances.is_empty(), "no database");
        config.auth.max_grant_ttl_secs = plenary::config::Config::default().auth.max_grant_ttl_secs;
        let server = plenary::start(config.clone()).await.unwrap();
        let ws = format!("ws://{}/rtc", server.http_addr());
        let grant = api_key_grant(&config, Duration::from_secs(300));
        assert_welcome(&membership_env::join(&ws, &grant, Some("gm")).await);
        let replay = membership_env::join(&ws, &grant, Some("gm")).await;
        assert_invalid_grant(&replay, "already used");
        // The default limit on a grant's lifetime is short: an hour is refused.
        let long = api_key_grant(&config, Duration::from_secs(3600));
        let answer = membership_env::join(&ws, &long, Some("gm")).await;
        assert_invalid_grant(&answer, "lifetime");
        tokio::time::timeout(membership_env::T, server.shutdown())
            .await
            .unwrap();
    })
    .await;
}

/// `membership.database` in a folder that does not exist yet: Plenary creates the folder,
/// readable by its own user only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_folder_is_created_with_restrictive_permissions() {
    bounded(async {
        let nested =
            std::env::temp_dir().join(format!("plenary-varlib-{}", plenary::secret::random_id()));
        let db = nested.join("lib/plenary/plenary.db");
        let db_text = db.display().to_string();
        let env = env_with(move |m| m.database = db_text).await;
        env.signed_in_as("101").await;
        assert!(db.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(db.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the folder is private: {mode:o}");
        }
        env.stop().await;
        let _ = std::fs::remove_dir_all(&nested);
    })
    .await;
}

/// Runs `plenary audit` in `cwd` with only these environment variables.
fn run_audit(cwd: &std::path::Path, vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_plenary"));
    cmd.args(["audit", "--json"])
        .current_dir(cwd)
        .env_clear()
        .env("PLENARY_LOG", "warn");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("plenary audit runs")
}

/// `plenary audit` finds the database the server uses (the same configuration file) and
/// says which one it read, or plainly why it found none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plenary_audit_says_which_database_it_read() {
    bounded(async {
        let env = env().await;
        env.signed_in_as("101").await;
        let config_file = env.dir.join("plenary.toml");
        std::fs::write(
            &config_file,
            format!(
                "[membership]\ndatabase = {:?}\n",
                env.config.membership.database
            ),
        )
        .unwrap();
        let elsewhere = env.dir.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();

        let out = run_audit(
            &elsewhere,
            &[("PLENARY_CONFIG", config_file.to_str().unwrap())],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_contains(&String::from_utf8_lossy(&out.stdout), "sign_in");
        assert_contains(&stderr, &env.config.membership.database);
        assert_contains(&stderr, config_file.to_str().unwrap());

        // No configuration anywhere: it says where it looked and how to point it.
        let out = run_audit(&elsewhere, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert_contains(&stderr, &elsewhere.join("plenary.db").display().to_string());
        assert_contains(&stderr, "--config");
        env.stop().await;
    })
    .await;
}
