//! End-to-end tests of the `agora` program, run as a user runs it.

mod browser;
mod digits;
mod lifecycle;
mod market;
mod replicas;
mod run;
mod tls;
mod web;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn guests_dir() -> PathBuf {
    match std::env::var_os("AGORA_GUESTS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/wasm/wasm32-wasip2/release"),
    }
}

/// Path of a built guest component (`cargo xtask examples`).
pub fn guest(name: &str) -> PathBuf {
    let path = guests_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask examples`",
        path.display()
    );
    path
}

/// Run `agora ARGS` and return its output.
pub fn agora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(args)
        .output()
        .expect("agora starts")
}

/// Whether a market on `port` answers `GET /api/v1/health` with 200.
fn answers_health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let asked = stream.write_all(b"GET /api/v1/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut head = [0u8; 12];
    asked.is_ok() && stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// The end of the market's log in `home`, for a failure's message.
fn market_log(home: &Path) -> String {
    let log = std::fs::read_to_string(home.join("market.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agora-it-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Market {
    pub child: Child,
    pub url: String,
    pub home: PathBuf,
    pub port: u16,
    pub operator_id: String,
    /// Extra `agora market serve` arguments, kept across restarts.
    serve_args: Vec<String>,
    /// The private CA its clients trust (an HTTPS market's).
    pub ca: Option<PathBuf>,
}

impl Drop for Market {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Market {
    /// A market on a free port, its operator key at `home/operator.json`.
    pub fn start(name: &str) -> Market {
        Self::start_with(name, &[])
    }

    /// [`Market::start`] with extra `agora market serve` arguments.
    pub fn start_with(name: &str, serve_args: &[&str]) -> Market {
        let home = temp_dir(name);
        let operator = home.join("operator.json");
        let _ = std::fs::remove_file(&operator);
        let out = agora_in(&home, &["--key", operator.to_str().unwrap(), "keys", "new"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let operator_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let serve_args: Vec<String> = serve_args.iter().map(|a| a.to_string()).collect();
        // A port free a moment ago may be taken before the market binds it
        // (tests run side by side): then it exits, and another port is tried.
        let (child, port) = (0..5)
            .find_map(|_| {
                let port = TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let _ = std::fs::remove_file(home.join("market.db"));
                Self::serve(&home, port, &operator_id, &serve_args).map(|child| (child, port))
            })
            .unwrap_or_else(|| panic!("the market did not start: {}", market_log(&home)));
        Market {
            child,
            url: format!("http://127.0.0.1:{port}"),
            home,
            port,
            operator_id,
            serve_args,
            ca: None,
        }
    }

    /// `agora market serve` on `port`, once it answers; None when it
    /// exited first (its log is `market.log` in `home`).
    fn serve(home: &Path, port: u16, operator_id: &str, extra: &[String]) -> Option<Child> {
        let db = home.join("market.db");
        let log = std::fs::File::create(home.join("market.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args([
                "market",
                "serve",
                "--db",
                &format!("sqlite://{}", db.display()),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--operator",
                operator_id,
            ])
            .args(extra)
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        // Its health answered over HTTP: a bare connect can reach another
        // process on the port, or the client's own socket. (Over HTTPS, the
        // connect is what is checked.)
        let tls = extra.iter().any(|a| a == "--tls-cert");
        let ready = || match tls {
            true => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            false => answers_health(port),
        };
        while !ready() {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the market did not start: {}",
                market_log(home)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(child)
    }

    /// Kill the market (no clean shutdown) and start it again on its database.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::serve(&self.home, self.port, &self.operator_id, &self.serve_args)
            .unwrap_or_else(|| {
                panic!("the market did not start again: {}", market_log(&self.home))
            });
    }

    /// A provider host with its own key, which the operator vouches for
    /// (its own host: trusted from the start), killed when dropped.
    pub fn host(&self, name: &str, extra: &[&str]) -> Process {
        let key = self.home.join(format!("{name}.json"));
        let _ = std::fs::remove_file(&key);
        let made = self.agora(&["--key", key.to_str().unwrap(), "keys", "new"]);
        assert!(made.status.success());
        let operator = self.home.join("operator.json");
        let vouched = self.agora(&[
            "--key",
            operator.to_str().unwrap(),
            "vouch",
            stdout(&made).trim(),
        ]);
        assert!(vouched.status.success(), "{}", stderr(&vouched));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
        cmd.env("AGORA_HOME", &self.home)
            .env("AGORA_MARKET", &self.url)
            .args(["--key", key.to_str().unwrap(), "host", "--heartbeat", "0.5"]);
        if let Some(ca) = &self.ca {
            cmd.env("AGORA_CA_CERT", ca);
        }
        cmd.args(extra).stderr(Stdio::null());
        Process(cmd.spawn().unwrap())
    }

    pub fn agora(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
        cmd.env("AGORA_HOME", &self.home)
            .env("AGORA_MARKET", &self.url)
            .args(args);
        if let Some(ca) = &self.ca {
            cmd.env("AGORA_CA_CERT", ca);
        }
        cmd.output().unwrap()
    }
}

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn agora_in(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_HOME", home)
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many units `agora status` lists in `state` (its lines read
/// `  unit 0    running   attempts 1`).
pub fn units_in(status: &str, state: &str) -> usize {
    status
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("unit ") && l.split_whitespace().nth(2) == Some(state)
        })
        .count()
}
