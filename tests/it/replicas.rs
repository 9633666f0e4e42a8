//! Market replicas for real: two `agora market serve` processes on one
//! PostgreSQL schema and one S3 bucket (moto's server), behind HAProxy
//! (Debian's; `cargo xtask test` installs it), with hosts and buyers
//! talking to the balancer only. `docs/deploy.md` is the deployment this
//! tests.

use super::lifecycle::{balance_of, paid_to_providers, setup_with};
use super::*;

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn postgres_url() -> String {
    std::env::var("AGORA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema of the test database, dropped with this.
struct Schema(String);

impl Schema {
    fn create(name: &str) -> Schema {
        let schema = format!("agora_e2e_{name}_{}", std::process::id());
        Self::psql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ));
        Schema(schema)
    }

    fn psql(sql: &str) {
        let out = Command::new("psql")
            .args([&postgres_url(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "the replica test needs psql and PostgreSQL at {}: {e}",
                    postgres_url()
                )
            });
        assert!(out.status.success(), "psql: {}", stderr(&out));
    }

    /// The database URL whose connections live in this schema.
    fn url(&self) -> String {
        format!("{}?options=-c%20search_path%3D{}", postgres_url(), self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        Self::psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
    }
}

/// moto's S3 server with one bucket, `agora`.
fn s3_server() -> (Killed, String) {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("the replica test needs moto's S3 server (`cargo xtask test` installs it): {e}")
        });
    let server = Killed(child);
    wait_listening(port, "moto_server");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    write!(stream, "PUT /agora HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "creating the bucket: {answer}"
    );
    (server, format!("http://127.0.0.1:{port}"))
}

/// One `agora market serve` replica on the shared database and bucket.
/// Clients sign for the balancer's origin (`public`), which every replica
/// names as its own.
fn replica(home: &Path, db: &str, s3: &str, operator: &str, port: u16, public: &str) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_HOME", home)
        .env("AWS_ENDPOINT", s3)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "agora-test")
        .env("AWS_SECRET_ACCESS_KEY", "agora-test")
        .args([
            "market",
            "serve",
            "--db",
            db,
            "--blobs",
            "s3://agora",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--operator",
            operator,
            "--public-url",
            public,
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, "a market replica");
    child
}

/// HAProxy in front of the replicas: health-checked every 300 ms, a
/// request whose connection is refused sent to the other replica, long
/// timeouts for event streams.
fn balancer(home: &Path, port: u16, replicas: &[u16]) -> Killed {
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!("  server replica{i} 127.0.0.1:{p} check inter 300ms fall 1 rise 2\n")
        })
        .collect();
    let config = format!(
        "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 5m\n  timeout server 5m\n  retries 3\n  option redispatch\n\
         frontend market\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\
         backend replicas\n  balance roundrobin\n  option httpchk GET /api/v1/health\n  http-check expect status 200\n{servers}"
    );
    let path = home.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("the replica test needs HAProxy (`cargo xtask test` installs Debian's): {e}")
        });
    let balancer = Killed(child);
    wait_listening(port, "haproxy");
    balancer
}

// A job runs through two replicas behind HAProxy; while its units run, one
// replica is killed, a new one takes its place, and the other is killed.
// The job completes: every unit verified, the buyer's `--wait` and `logs
// --follow` event streams reconnected and ended with the job, each
// accepted result paid once, and the ledger's invariants hold.
#[test]
fn a_replica_killed_mid_job_loses_nothing() {
    let schema = Schema::create("replicas");
    let (_s3, endpoint) = s3_server();
    let home = temp_dir("replicas");
    let operator_key = home.join("operator.json");
    let _ = std::fs::remove_file(&operator_key);
    let made = agora_in(
        &home,
        &["--key", operator_key.to_str().unwrap(), "keys", "new"],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let operator = stdout(&made).trim().to_string();
    let (first, second, front) = (free_port(), free_port(), free_port());
    let public = format!("http://127.0.0.1:{front}");
    let start_replica =
        |home: &Path, port: u16| replica(home, &schema.url(), &endpoint, &operator, port, &public);
    let doomed = start_replica(&home, first);
    let mut other = Killed(start_replica(&home, second));
    let _haproxy = balancer(&home, front, &[first, second]);
    // The market as its users see it: the balancer's address.
    let market = Market {
        child: doomed,
        url: public.clone(),
        home,
        port: front,
        operator_id: operator.clone(),
        serve_args: Vec::new(),
        ca: None,
    };

    setup_with(&market, "hostile");
    let units = market.home.join("units");
    std::fs::create_dir_all(&units).unwrap();
    for i in 0..6 {
        // Each unit takes about five seconds of wall time and little CPU.
        std::fs::write(units.join(format!("unit-{i}.txt")), "paced-log 50").unwrap();
    }
    let (_h1, _h2) = (
        market.host("provider-1", &[]),
        market.host("provider-2", &[]),
    );
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_agora"))
            .env("AGORA_HOME", &market.home)
            .env("AGORA_MARKET", &market.url)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The buyer waits on the job's event stream, and follows its logs on
    // another: both through the balancer.
    let mut waiting = spawn(&[
        "submit",
        "hostile",
        "--inputs",
        units.to_str().unwrap(),
        "--max-price",
        "4000",
        "--wait",
    ]);
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(waiting.stdout.as_mut().unwrap()),
        &mut first_line,
    )
    .unwrap();
    let job = first_line.trim().to_string();
    assert!(!job.is_empty(), "agora submit printed the job's id first");
    let mut following = spawn(&["logs", &job, "--follow"]);
    wait_until("a unit to run", || {
        units_in(&stdout(&market.agora(&["status", &job])), "running") > 0
    });
    // A rolling failure: the first replica dies without a goodbye (the
    // balancer finds out from refused connections and its health checks),
    // a new one takes its place, then the other dies too. Every stream
    // and connection open before was cut at least once, mid-job.
    let mut market = market;
    let _ = market.child.kill();
    let _ = market.child.wait();
    market.child = start_replica(&market.home, first);
    std::thread::sleep(Duration::from_secs(1)); // two health checks pass
    let status = stdout(&market.agora(&["status", &job]));
    assert!(
        !status.contains("(Done)"),
        "the job is still running when the second replica dies: {status}"
    );
    let _ = other.0.kill();
    let _ = other.0.wait();

    let waited = wait_with_timeout(&mut waiting, Duration::from_secs(240));
    assert!(
        waited.status.success(),
        "the buyer's wait ended with the job: {}\n{}",
        stdout(&waited),
        stderr(&waited)
    );
    let followed = wait_with_timeout(&mut following, Duration::from_secs(60));
    let log = stdout(&followed);
    assert!(
        followed.status.success() && stderr(&followed).contains("ended: Done"),
        "{log}\n{}",
        stderr(&followed)
    );
    for (who, err) in [
        ("submit --wait", stderr(&waited)),
        ("logs --follow", stderr(&followed)),
    ] {
        assert!(
            err.contains("reconnecting"),
            "{who} lost its stream and reconnected: {err}"
        );
    }
    assert!(
        log.matches("step 49").count() >= 6,
        "every unit's last line reached the follower:\n{log}"
    );
    let status = stdout(&market.agora(&["status", &job]));
    assert!(
        status.contains("(Done)") && units_in(&status, "verified") == 6,
        "{status}"
    );
    let earned: u64 = ["provider-1", "provider-2"]
        .iter()
        .map(|name| {
            balance_of(
                &market,
                &[
                    "--key",
                    market.home.join(format!("{name}.json")).to_str().unwrap(),
                ],
            )
        })
        .sum();
    let paid = paid_to_providers(&status);
    assert!(
        paid > 0 && earned == paid,
        "each accepted result paid once: earned {earned}, paid {paid}\n{status}"
    );
    let checked = market.agora(&[
        "--key",
        market.home.join("operator.json").to_str().unwrap(),
        "market",
        "check",
    ]);
    assert!(
        checked.status.success(),
        "the ledger's invariants hold: {}{}",
        stdout(&checked),
        stderr(&checked)
    );
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The child's output once it exits, killing it after `limit`.
fn wait_with_timeout(child: &mut Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut out = Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out.stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut out.stderr)
        .unwrap();
    out
}
