//! The storefront page (clients/web) in a real headless Chromium (issue 15): `soko serve --demo`
//! serves it on SOKO_WEB_ADDR, and clients/web/test/storefront.mjs drives Debian's chromium with
//! playwright-core through listing, text search, photo search, a seller's sign-in and new
//! product, and a refusal by CORS from an origin the server does not allow. scripts/test builds
//! the page and installs chromium; with CI=true their absence is a failure.

use std::path::Path;

use soko::proto::soko::auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient};

use crate::common::{process::SokoProcess, tool_ready};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHROMIUM: &str = "/usr/bin/chromium";

fn ready() -> bool {
    let built = Path::new(ROOT).join("clients/web/dist/app.js").exists();
    let browser = Path::new(CHROMIUM).exists();
    let driver = Path::new(ROOT).join("clients/typescript/node_modules/playwright-core").exists();
    tool_ready(
        built && browser && driver,
        &format!(
            "the storefront test's clients/web/dist ({built}), {CHROMIUM} ({browser}) and playwright-core ({driver}) (scripts/test provides them)"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storefront_works_in_a_real_browser() {
    if !ready() {
        return;
    }
    // The page's port is only known once bound, and the allowed origin names it: bind a free
    // port first and hand it over.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let allowed = format!("http://localhost:{port}");
    let web_dir = format!("{ROOT}/clients/web/dist");
    let web_addr = format!("127.0.0.1:{port}");
    let soko = SokoProcess::start_with(
        &["--demo"],
        &[("SOKO_WEB_ADDR", &web_addr), ("SOKO_WEB_DIR", &web_dir), ("SOKO_CORS_ORIGINS", &allowed)],
    )
    .await;
    assert_eq!(soko.web.map(|a| a.port()), Some(port));
    AuthServiceClient::new(soko.channel().await)
        .register(auth_pb::RegisterRequest {
            email: "shop@example.com".into(),
            password: "a long passphrase".into(),
            role: auth_pb::Role::Seller.into(),
        })
        .await
        .unwrap();
    let photo = std::env::temp_dir().join(format!("soko_photo_{}.png", uuid::Uuid::new_v4().simple()));
    std::fs::write(&photo, soko::demo::picture_png(4).unwrap()).unwrap();
    // docs/storefront.png is a copy of one of these, taken after the steps above.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("storefront.png");
    let out = tokio::process::Command::new("node")
        .arg(format!("{ROOT}/clients/web/test/storefront.mjs"))
        .env("SOKO_WEB_URL", &allowed)
        .env("SOKO_WEB_URL_DISALLOWED", format!("http://127.0.0.1:{port}"))
        .env("SOKO_SELLER_EMAIL", "shop@example.com")
        .env("SOKO_SELLER_PASSWORD", "a long passphrase")
        .env("SOKO_PHOTO", &photo)
        .env("CHROMIUM", CHROMIUM)
        .env("SOKO_SCREENSHOT", &screenshot)
        .output()
        .await
        .expect("node runs");
    let _ = std::fs::remove_file(&photo);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("storefront ok"), "{stdout}");
}
