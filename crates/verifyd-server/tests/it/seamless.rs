//! Seamless verification by header enrichment, with nginx as the mobile operator's proxy on
//! 127.0.0.3 injecting the subscriber's number for the device on 127.0.0.2. A header forged
//! by the device itself (connecting directly) is ignored.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::{TestApp, assert_error};

const DEVICE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

struct Nginx {
    _child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx on 127.0.0.3:PORT proxying to `upstream`, adding `X-MSISDN` for the device.
    async fn start(upstream: &str, msisdn: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let p = dir.path().display();
        let conf = format!(
            r#"
pid {p}/nginx.pid;
error_log {p}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {p}; proxy_temp_path {p}; fastcgi_temp_path {p};
    uwsgi_temp_path {p}; scgi_temp_path {p};
    map $remote_addr $msisdn {{ 127.0.0.2 "{msisdn}"; default ""; }}
    server {{
        listen 127.0.0.3:{port};
        location / {{
            proxy_pass {upstream};
            proxy_bind 127.0.0.3;
            proxy_set_header X-MSISDN $msisdn;
        }}
    }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .args([
                "-p",
                &p.to_string(),
                "-c",
                "nginx.conf",
                "-g",
                "daemon off; master_process off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx must be installed (scripts/test.sh installs it)");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.3", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Self {
            _child: child,
            port,
            _dir: dir,
        }
    }
}

#[tokio::test]
async fn the_operator_proxy_asserts_the_number_and_a_forged_header_is_ignored() {
    let app = TestApp::spawn_with(
        "[[seamless.providers]]\nkind = \"header_enrichment\"\ncountries = [\"SE\"]\nmsisdn_header = \"X-MSISDN\"\noperator_proxies = [\"127.0.0.3/32\"]",
    )
    .await;
    let nginx = Nginx::start(&app.url, "46700007001").await;
    let device = reqwest::Client::builder()
        .local_address(DEVICE)
        .build()
        .unwrap();
    let via_operator =
        |target: &str| target.replace(&app.url, &format!("http://127.0.0.3:{}", nginx.port));

    // The device opens targetUri directly, forging the header: ignored, still PENDING.
    let v = app.start_ok("seamless", "+46700007001").await;
    let target = v["seamless"]["targetUri"].as_str().unwrap().to_string();
    let r = device
        .get(&target)
        .header("X-MSISDN", "+46700007001")
        .send()
        .await
        .unwrap();
    assert_error(r, 403, 40300).await;
    assert_eq!(
        app.status_id(v["id"].as_str().unwrap()).await["status"],
        "PENDING"
    );

    // Over the operator's network (through its proxy): SUCCESSFUL.
    let r = device.get(via_operator(&target)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let s = app.status_id(v["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "SUCCESSFUL");

    // The device's line is another number: FAIL.
    let other = app.start_ok("seamless", "+46700007002").await;
    let r = device
        .get(via_operator(
            other["seamless"]["targetUri"].as_str().unwrap(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "FAIL");

    // A destination no provider serves.
    let r = app.start(json!({"identity": {"type": "number", "endpoint": "+33612345678"}, "method": "seamless"})).await;
    let e = assert_error(r, 403, 40300).await;
    assert_eq!(
        e["message"],
        "Seamless verification not available for given destination."
    );
}
