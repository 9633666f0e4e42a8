//! The market over HTTPS, with a private certificate authority made at test
//! time (rcgen): the CLI and a provider host complete a job through it, and
//! a client refuses a certificate its roots do not vouch for, or one made
//! for another name, with an error that says which.

use super::*;

/// A test CA's certificate, and a server certificate it issued for `names`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, label: &str, names: &[&str]) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Agora test CA {label}"));
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
    let files = Pki {
        ca: dir.join(format!("{label}-ca.pem")),
        cert: dir.join(format!("{label}-cert.pem")),
        key: dir.join(format!("{label}-key.pem")),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, server.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    files
}

/// A market serving HTTPS with `pki`'s certificate, at `host_name`.
fn tls_market(name: &str, pki: &Pki, host_name: &str) -> Market {
    // One host runs every unit here: no spot check waits for a second one.
    let mut market = Market::start_with(
        name,
        &[
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
            "--spot-check-rate",
            "0",
        ],
    );
    market.url = format!("https://{host_name}:{}", market.port);
    market.ca = Some(pki.ca.clone());
    market
}

#[test]
fn the_cli_and_a_host_complete_a_job_over_https() {
    let dir = temp_dir("tls-journey");
    let pki = pki(&dir, "journey", &["localhost"]);
    let market = tls_market("tls-journey", &pki, "localhost");
    let me = stdout(&market.agora(&["keys", "new"])).trim().to_string();
    let published = market.agora(&[
        "publish",
        guest("mandelbrot").to_str().unwrap(),
        "--name",
        "mandelbrot",
        "--version",
        "1.0.0",
    ]);
    assert!(published.status.success(), "{}", stderr(&published));
    let operator = market.home.join("operator.json");
    assert!(
        market
            .agora(&["--key", operator.to_str().unwrap(), "mint", &me, "5000"])
            .status
            .success()
    );
    let _host = market.host("tls-provider", &[]);
    let view = dir.join("view.txt");
    std::fs::write(&view, "width=64 height=48 iterations=40").unwrap();
    let out_dir = dir.join("out");
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = market.agora(&[
        "submit",
        "mandelbrot",
        "--input",
        view.to_str().unwrap(),
        "--max-price",
        "1000",
        "--wait",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let png = std::fs::read(out_dir.join("unit-0.png")).unwrap();
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "the output came back over HTTPS"
    );
}

#[test]
fn a_client_refuses_a_certificate_its_roots_do_not_vouch_for() {
    let dir = temp_dir("tls-roots");
    let pki_a = pki(&dir, "a", &["localhost"]);
    let pki_b = pki(&dir, "b", &["localhost"]);
    let market = tls_market("tls-roots", &pki_a, "localhost");
    let search = |ca: Option<&Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agora"));
        cmd.env("AGORA_HOME", &market.home)
            .env("AGORA_MARKET", &market.url)
            .env_remove("AGORA_CA_CERT")
            .args(["search", "x"]);
        if let Some(ca) = ca {
            cmd.args(["--ca-cert", ca.to_str().unwrap()]);
        }
        cmd.output().unwrap()
    };
    for (ca, roots) in [
        (Some(pki_b.ca.as_path()), "another CA"),
        (None, "the platform's roots"),
    ] {
        let out = search(ca);
        assert!(
            !out.status.success(),
            "{roots} must not vouch for a private CA's certificate"
        );
        assert!(
            stderr(&out).contains("certificate this client does not trust")
                && stderr(&out).contains("--ca-cert"),
            "{roots}: {}",
            stderr(&out)
        );
    }
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let out = search(Some(&junk));
    assert!(
        !out.status.success() && stderr(&out).contains("no PEM certificate"),
        "{}",
        stderr(&out)
    );
    let out = search(Some(&pki_a.ca));
    assert!(out.status.success(), "the right CA works: {}", stderr(&out));
}

#[test]
fn a_client_refuses_a_trusted_cas_certificate_for_another_name() {
    let dir = temp_dir("tls-name");
    let pki = pki(&dir, "name", &["market.example"]);
    let market = tls_market("tls-name", &pki, "localhost");
    let out = market.agora(&["search", "x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("issued for another host name"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_client_refuses_plain_http_to_another_machine() {
    let home = temp_dir("tls-plain");
    // Refused before anything is sent: no connection is made.
    for url in [
        "http://market.example.org:8080",
        "HTTP://market.example.org",
        "http://localhost.example.org",
        "http://127.0.0.1.example.org/",
    ] {
        let out = agora_in(&home, &["search", "x", "--market", url]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("plain HTTP to another machine"),
            "{url}: {}",
            stderr(&out)
        );
    }
    for url in [
        "http://127.0.0.1:80@market.example.org",
        "http://[::1]@market.example.org",
    ] {
        let out = agora_in(&home, &["search", "x", "--market", url]);
        assert!(
            !out.status.success() && stderr(&out).contains("no user name or password"),
            "{url}: {}",
            stderr(&out)
        );
    }
}
